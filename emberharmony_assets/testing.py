"""Helpers for testing the asset graph on your own small table (``docs/testing.md`` shows them at work).

A test writes a small table to a DuckDB file (``duckdb_table``), builds the resources the assets need over it and
a temporary artifact folder (``resources``), materialises one day or a range of days as one run
(``materialize_days``), then reads back a day's figures (``day_figures``, ``figures_by_day``) or what an asset
stored (``stored_frame``). Public Dagster API only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    "day_figures",
    "duckdb_table",
    "figures_by_day",
    "materialize_days",
    "range_tags",
    "resources",
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
