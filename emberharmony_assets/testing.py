"""Helpers for testing the asset graph on your own small table (``docs/testing.md`` shows them at work).

A test writes a small table to a DuckDB file (``duckdb_table``), builds the resources the assets need over it and
a temporary artifact folder (``resources``), materialises one day or a range of days as one run
(``materialize_days``), then reads back a day's figures (``day_figures``, ``figures_by_day``) or what an asset
stored (``stored_frame``). Public Dagster API only.

For an integration test of a code location as Dagster serves it: ``dagster_dev`` starts ``dagster dev`` on a
throw-away instance and waits until it serves the assets; ``graphql`` asks it over HTTP; ``free_port``,
``default_signals`` and ``stop_process_group`` are its parts, for a server started otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSpec,
    DagsterInstance,
    ExecuteInProcessResult,
    SourceAsset,
    materialize,
)

from emberharmony_core.layout import read_asset_frame, stride_folder
from emberharmony_core.store import ArtifactStore

from .assets import all_assets
from .dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from .definitions import DEMO_SETTINGS, DEMO_SOURCE, NoValuesIOManager
from .resources import ArtifactStoreResource, BackendResource, DuckDBSourceResource, PipelineSettings, SourceResource

# Dagster's run tags for a run over a range of partitions (which Dagster does not export)
RANGE_START_TAG = ASSET_PARTITION_RANGE_START_TAG
RANGE_END_TAG = ASSET_PARTITION_RANGE_END_TAG

__all__ = [
    "RANGE_END_TAG",
    "RANGE_START_TAG",
    "DagsterDev",
    "dagster_dev",
    "day_figures",
    "default_signals",
    "duckdb_table",
    "figures_by_day",
    "free_port",
    "graphql",
    "materialize_days",
    "range_tags",
    "resources",
    "stop_process_group",
    "stored_frame",
]


def duckdb_table(path: str | os.PathLike, frame: pd.DataFrame, table: str = "readings") -> str:
    """Write ``frame`` as table ``table`` of the DuckDB file ``path`` (replacing a table of that name); returns
    the path as a string. Timezone-aware timestamps become TIMESTAMPTZ; naive ones TIMESTAMP, read as UTC."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("frame_to_write", frame)
        connection.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM frame_to_write')
        connection.unregister("frame_to_write")
    return str(path)


def resources(
    database: str | os.PathLike | SourceResource,
    artifacts: str | os.PathLike,
    *,
    source: Mapping[str, Any] | None = None,
    backend: str = "numpy",
    **settings: Any,
) -> dict[str, Any]:
    """The resources the assets need: ``source`` over the DuckDB file ``database``, ``backend``, ``settings``
    and ``store`` (artifacts under the folder ``artifacts``), plus the io_manager that refuses returned values.

    ``source``: the fields of ``DuckDBSourceResource`` (``table``, ``timestamp_column``, ``entity_column``,
    ``feature_columns``, ...); left out, the demo table's layout and its ``target_column``. ``settings``:
    fields of ``PipelineSettings`` (their defaults otherwise); a bad value fails here, naming the field.
    ``database`` may instead be a source resource built already (a ``BigQuerySourceResource``, say): it is the
    source as is, ``source`` is left out and the settings are yours alone (no demo ``target_column``).
    """
    source_resource: SourceResource
    base_settings: dict[str, Any] = {}
    if isinstance(database, SourceResource):
        if source is not None:
            raise TypeError("resources(): database is a source resource already; leave source out")
        source_resource = database
    else:
        fields = dict(DEMO_SOURCE) if source is None else dict(source)
        base_settings = dict(DEMO_SETTINGS) if source is None else {}
        source_resource = DuckDBSourceResource(database=str(database), **fields)
    return {
        "source": source_resource,
        "backend": BackendResource(name=backend),
        "settings": PipelineSettings(**{**base_settings, **settings}),
        "store": ArtifactStoreResource(base_path=str(artifacts)),
        "io_manager": NoValuesIOManager(),
    }


def range_tags(first: str, last: str | None = None) -> dict[str, str]:
    """The run tags of one run over the days ``first`` .. ``last`` (``last`` left out: ``first`` alone)."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last or first}


def materialize_days(
    first: str | None,
    last: str | None = None,
    *,
    resources: Mapping[str, Any],
    selection: Sequence[str] | None = None,
    instance: DagsterInstance | None = None,
    raise_on_error: bool = True,
    run_config: Mapping[str, Any] | None = None,
    assets: Sequence[AssetsDefinition | AssetSpec | SourceAsset] | None = None,
) -> ExecuteInProcessResult:
    """Materialise the assets of ``selection`` (names; every asset when left out) for the day ``first`` or, given
    ``last``, for every day ``first`` .. ``last`` in ONE run, as a backfill of the range does; days are
    ``"YYYY-MM-DD"``. Unpartitioned assets in the selection (``preprocessor``, ``pca_models``) run once.
    ``instance``: an ephemeral one when left out (pass your own to read figures back after the run).
    ``first=None``: no day, for a selection of unpartitioned assets alone. ``run_config``: Dagster's run config
    (e.g. ``{"loggers": {"console": {"config": {"log_level": "ERROR"}}}}`` for a quiet run). ``assets``: another
    asset graph than the pipeline's (``resources={}`` when it needs none)."""
    target: dict[str, Any] = (
        {} if first is None else {"partition_key": first} if last is None else {"tags": range_tags(first, last)}
    )
    return materialize(
        all_assets if assets is None else assets,
        resources=dict(resources),
        selection=list(selection) if selection is not None else None,
        instance=instance if instance is not None else DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
        run_config=dict(run_config) if run_config is not None else None,
        **target,
    )


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


def day_figures(source: DagsterInstance | ExecuteInProcessResult, asset: str, day: str | None = None) -> dict[str, Any]:
    """The figures (metadata as plain values, in their order) of the latest materialisation of ``asset`` for
    ``day`` (``None`` for an unpartitioned asset), from an instance or from one run's result. A day's own figures
    come first; in a run over a range, the run's figures follow, each named ``run_...``. KeyError when none."""
    if isinstance(source, ExecuteInProcessResult):
        found = [
            event.materialization
            for event in source.get_asset_materialization_events()
            if event.materialization is not None
            and event.materialization.asset_key == AssetKey(asset)
            and event.materialization.partition == day
        ]
        if not found:
            raise KeyError(f"no materialisation of {asset!r} for {day!r} in run {source.run_id}")
        return _plain(found[-1].metadata)  # the last one of the run
    records_filter = AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[day] if day else None)
    for record in source.fetch_materializations(records_filter, limit=10).records:  # newest first
        materialization = record.asset_materialization
        if materialization is not None and materialization.partition == day:
            return _plain(materialization.metadata)
    raise KeyError(f"no materialisation of {asset!r} for {day!r} in this instance")


def figures_by_day(instance: DagsterInstance, asset: str) -> dict[str, dict[str, Any]]:
    """``day -> day_figures(instance, asset, day)`` for every day ``asset`` was materialised for, in day order."""
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(AssetKey(asset), limit=1000, cursor=cursor)  # newest first
        for record in result.records:
            materialization = record.asset_materialization
            if materialization is not None and materialization.partition is not None:
                out.setdefault(materialization.partition, _plain(materialization.metadata))
        if not result.has_more:
            return dict(sorted(out.items()))
        cursor = result.cursor


def stored_frame(artifacts: str | os.PathLike, asset: str, day: str, stride: int | None = None) -> pd.DataFrame:
    """What row-wise ``asset`` stored for ``day`` under the folder ``artifacts``, as one frame: ``raw_chunk``,
    ``split_data`` and ``cyclical_features`` with the columns of the assets before them, ``features``; for
    ``stride_windows`` and ``projected_windows``, give the ``stride``."""
    store = ArtifactStore(artifacts)
    if stride is not None:
        return store.read_frame(asset, day, stride_folder(stride))
    return read_asset_frame(store, asset, day)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(port: int, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
    """The ``data`` of a GraphQL request to the Dagster webserver on 127.0.0.1:``port``; RuntimeError with the
    server's ``errors`` when it answers any."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def default_signals() -> None:
    """``preexec_fn`` for a server a test starts: SIGINT back to its default in the child (a background job
    inherits it ignored, and Dagster maps SIGTERM to what SIGINT does), so SIGTERM stops it cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_process_group(process: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM to ``process`` (a server started with ``start_new_session=True``), then after ``grace`` seconds
    SIGKILL whatever is left of its process group (code servers, run workers)."""
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@dataclass(frozen=True)
class DagsterDev:
    """A ``dagster dev`` that ``dagster_dev`` started: its process, port and output file."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        """``graphql(self.port, ...)``."""
        return graphql(self.port, query, variables, timeout)

    def log_tail(self, chars: int = 6000) -> str:
        """The last ``chars`` characters of its output."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no output)"


@contextmanager
def dagster_dev(
    home: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    workspace: str | os.PathLike | None = None,
    log: str | os.PathLike | None = None,
    partitions: tuple[str, str | None] | None = None,
    backend: str | None = None,
    startup_s: float = 120,
    grace: float = 15,
    tail: int = 6000,
) -> Iterator[DagsterDev]:
    """``dagster dev`` on the instance ``home`` (``DAGSTER_HOME``: a folder you made, with your ``dagster.yaml``),
    on 127.0.0.1 and a free port; yields a ``DagsterDev`` once the code location's assets are served, and stops
    its whole process group on exit (SIGTERM, then SIGKILL after ``grace`` seconds).

    The code location: ``workspace`` (a ``workspace.yaml``, run from its folder), else the module
    ``emberharmony_assets.definitions``. Its environment: yours without ``EMBERHARMONY_*`` and ``DAGSTER_*``
    variables, then ``EMBERHARMONY_HOME`` = ``data``, ``EMBERHARMONY_PARTITION_START`` / ``_END`` = ``partitions``
    (start, end or None), ``EMBERHARMONY_BACKEND`` = ``backend`` (each when given), then ``env``. Its output goes to
    the file ``log`` (a temporary one, removed at the end, when left out); it writes nothing else. RuntimeError with
    the output's last ``tail`` characters when it exits or serves no assets within ``startup_s`` seconds; when the
    body raises, that tail is printed to stderr."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("EMBERHARMONY_", "DAGSTER_"))}
    variables["DAGSTER_HOME"] = os.path.abspath(home)
    if data is not None:
        variables["EMBERHARMONY_HOME"] = os.path.abspath(data)
    if partitions is not None:
        variables["EMBERHARMONY_PARTITION_START"] = partitions[0]
        if partitions[1]:
            variables["EMBERHARMONY_PARTITION_END"] = partitions[1]
    if backend is not None:
        variables["EMBERHARMONY_BACKEND"] = backend
    variables.update(env or {})
    if workspace is None:
        target, cwd = ["-m", "emberharmony_assets.definitions"], None
    else:
        target, cwd = ["-w", os.path.abspath(workspace)], os.path.dirname(os.path.abspath(workspace))
    own_folder = tempfile.mkdtemp(prefix="dagster_dev_") if log is None else None
    log_path = Path(log) if log is not None else Path(own_folder or ".") / "dagster_dev.log"
    port = free_port()
    command = [str(Path(sys.executable).parent / "dagster"), "dev", *target, "-h", "127.0.0.1", "-p", str(port)]
    try:
        with open(log_path, "wb") as out:  # a file, not a pipe: nobody reads it while runs log their events
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=variables,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=default_signals,
            )
        server = DagsterDev(process, port, log_path)
        try:
            _wait_for_assets(server, startup_s, tail)
            try:
                yield server
            except BaseException:
                print(f"--- dagster dev output (last {tail:,} characters, {log_path}) ---", file=sys.stderr)
                print(server.log_tail(tail), file=sys.stderr)
                raise
        finally:
            stop_process_group(process, grace)
    finally:
        if own_folder is not None:
            shutil.rmtree(own_folder, ignore_errors=True)


def _wait_for_assets(server: DagsterDev, startup_s: float, tail: int) -> None:
    """Until the webserver lists the code location's assets over GraphQL (none while the location loads)."""
    deadline, last_error = time.monotonic() + startup_s, None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {server.process.returncode}:\n{server.log_tail(tail)}")
        try:
            if server.graphql("{ assetNodes { assetKey { path } } }", timeout=5)["assetNodes"]:
                return
        except Exception as error:  # the webserver still starting
            last_error = error
        time.sleep(0.5)
    raise RuntimeError(
        f"dagster dev served no assets within {startup_s:.0f} s ({last_error}):\n{server.log_tail(tail)}"
    )
