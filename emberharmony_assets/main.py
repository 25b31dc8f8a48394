"""The main job on the embedded default: demo data (made if missing), every partition, every model.

    python -m emberharmony_assets.main [--entities 64] [--days 90] [--start 2026-01-01] [--backend auto]
        [--home data] [--fresh] [--verbose]                       (make demo ARGS="...")

Runs ``full_refresh_job`` (every asset and check) as ONE Dagster run over the full partition
range, on the persistent instance in ``<home>/dagster_home`` (``data/dagster_home`` by default, the
one ``make ui`` and the ``dagster`` CLI commands of docs/ui.md use), so the UI shows the same runs,
materialisations, checks and metadata. Prints one line per step as the run goes and a short report
(docs/demo.md); exits non-zero if any asset or check failed. ``--verbose`` prints Dagster's whole
event stream.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import date, timedelta

DEFAULT_START, DEFAULT_DAYS = "2026-01-01", 90  # the partitions' own defaults (partitions.py)
JOB_NAME = "full_refresh_job"  # jobs.py: every asset and check
# Dagster's markers for API maturity, raised at import by features our definitions use knowingly
# (backfill_policy, allow_nonexistent_upstream_partitions, ...): shown with --verbose only.
DAGSTER_MATURITY_WARNINGS = ("BetaWarning", "PreviewWarning", "SupersessionWarning")
TELEMETRY_DOCS = "https://docs.dagster.io/about/telemetry"


def dagster_yaml(dagster_home: str) -> str:
    """The ``dagster.yaml`` written into a new ``dagster_home``: Dagster's SQLite files in that folder,
    through ``PooledSqliteStorage`` (instance_storage.py: the same files, engines kept open between
    events), and telemetry left on with the line saying how to turn it off."""
    return f"""\
# Dagster instance settings for this data folder, written by `python -m emberharmony_assets.main`
# (make demo) because there was none; it is never rewritten, edit freely. `make ui` and the
# `dagster` CLI commands of docs/ui.md use it too.
#
# Storage: Dagster's SQLite files in this folder, written through emberharmony's PooledSqliteStorage,
# which keeps each database's connection open between events (fewer seconds per event than
# Dagster's default, which reconnects for each). Delete this block to use Dagster's default
# (same files); use `storage: postgres:` in production.
storage:
  custom:
    module: emberharmony_assets.instance_storage
    class: PooledSqliteStorage
    config:
      base_dir: {json.dumps(os.path.abspath(dagster_home))}

# Telemetry: Dagster collects anonymous usage statistics ({TELEMETRY_DOCS}).
# It is on by default; set `enabled: false` to turn it off.
telemetry:
  enabled: true
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Run the emberharmony asset graph on the embedded DuckDB demo.")
    parser.add_argument("--entities", type=int, default=64, help="sensors in the demo table (size scales with it)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days of demo data = daily partitions")
    parser.add_argument("--start", default=DEFAULT_START, help="first day of the demo data and partitions")
    parser.add_argument(
        "--backend", default=None, help="auto | numpy | torch | mlx (default: $EMBERHARMONY_BACKEND or auto)"
    )
    parser.add_argument(
        "--home",
        default=None,
        help="data folder: demo table, artifacts and the Dagster instance (<home>/dagster_home); "
        "default $EMBERHARMONY_HOME or ./data, with $DAGSTER_HOME when set",
    )
    parser.add_argument("--fresh", action="store_true", help="regenerate the demo table and artifacts")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print Dagster's whole event stream (DEBUG) and its Beta/Preview warnings",
    )
    return parser.parse_args(argv)


# One "planned" event per asset for the run's whole range, and a step's materialisations over the range
# stored as one batch: fewer event-log writes. Only this process sets them (Dagster reads the first when the
# run is created); what they trade and save: docs/demo.md, the main job's range settings.
DAGSTER_RANGE_SETTINGS = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1", "DAGSTER_EVENT_BATCH_SIZE": "1000"}


def run_config(verbose: bool = False) -> dict:
    """Dagster's console logger: warnings and errors only, unless ``verbose`` (every DEBUG event); the
    ``progress`` logger: one line per step. The event log (what the UI shows) is the same either way."""
    return {"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}, "progress": {}}}


def quiet_dagster_warnings() -> None:
    """Filter Dagster's Beta / Preview / Supersession warnings in this process (before the definitions
    are imported: they are raised while our definitions are built)."""
    import dagster

    for name in DAGSTER_MATURITY_WARNINGS:
        category = getattr(dagster, name, None)
        if category is not None:
            warnings.filterwarnings("ignore", category=category)


def ensure_dagster_yaml(dagster_home: str) -> str | None:
    """Write ``dagster.yaml`` into ``dagster_home`` when it has none (which also ends Dagster's "no
    dagster.yaml found" warning); returns the one line to print about it, else None. The file states
    Dagster's default, telemetry on, and how to turn it off: the choice stays the user's. Dagster's
    own first-run notice (the same facts, twenty lines) is then replaced by that one line."""
    path = os.path.join(dagster_home, "dagster.yaml")
    if os.path.exists(path):
        return None
    with open(path, "w") as out:
        out.write(dagster_yaml(dagster_home))
    # Dagster prints its notice when it first creates the instance's telemetry id ($DAGSTER_HOME/.telemetry):
    # create it here, quietly, when dagster_home is $DAGSTER_HOME (else Dagster would use ~/.dagster)
    if os.path.abspath(os.environ.get("DAGSTER_HOME") or os.devnull) == os.path.abspath(dagster_home):
        try:
            from .dagster_private import get_or_set_instance_id

            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                get_or_set_instance_id()
        except Exception:  # noqa: BLE001 - then Dagster prints its own notice later, nothing lost
            pass
    return (
        f"wrote {path}: SQLite storage, pooled; Dagster's anonymous telemetry is on, to turn it off set "
        f"telemetry.enabled: false there ({TELEMETRY_DOCS})"
    )


def ensure_instance(dagster_home: str | None = None) -> None:
    """``make ui``: make ``$DAGSTER_HOME`` (or ``dagster_home``) and its dagster.yaml if missing, saying so."""
    dagster_home = os.path.abspath(dagster_home or os.environ["DAGSTER_HOME"])
    os.makedirs(dagster_home, exist_ok=True)
    note = ensure_dagster_yaml(dagster_home)
    print(note or f"Dagster instance (DAGSTER_HOME): {dagster_home}")


def prepare_environment(home: str, start: str, days: int, dagster_home: str, verbose: bool = False) -> list[str]:
    """What the main job (and the benchmark's floor, which must run the same way) sets before importing
    the definitions: the data folder, the partition range, DAGSTER_HOME (with a dagster.yaml), Dagster's
    range-planned events, Python logging and, unless ``verbose``, quiet warnings. Returns lines to print."""
    end = date.fromisoformat(start) + timedelta(days=days)
    # partitions are defined at import: set their range before importing the definitions
    os.environ.update(
        EMBERHARMONY_HOME=home,
        EMBERHARMONY_PARTITION_START=start,
        EMBERHARMONY_PARTITION_END=end.isoformat(),
        DAGSTER_HOME=dagster_home,
    )
    os.makedirs(dagster_home, exist_ok=True)
    for name, value in DAGSTER_RANGE_SETTINGS.items():
        os.environ.setdefault(name, value)
    # Arrow's allocator from the process start (before pyarrow loads), not only from the settings resource's
    # setup: what is allocated before that stays in mimalloc's heaps (emberharmony_core.store.use_arrow_memory_pool)
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if not verbose:
        quiet_dagster_warnings()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("emberharmony_core").setLevel(logging.INFO)  # e.g. which backend `auto` chose
    note = ensure_dagster_yaml(dagster_home)
    return [note] if note else []


def resolve_job(assets, resources: dict | None = None, name: str = JOB_NAME):
    """``name`` from jobs.py resolved against ``assets`` and ``resources``, with Dagster's console logger
    and the progress logger (``run_config`` turns them on)."""
    from dagster import Definitions, colored_console_logger

    from .jobs import all_jobs
    from .summary import progress_logger

    job = next(j for j in all_jobs if j.name == name)
    defs = Definitions(
        assets=assets,
        jobs=[job],
        resources=resources or {},
        loggers={"console": colored_console_logger, "progress": progress_logger(assets)},
    )
    return defs.resolve_job_def(name)


def execute_range(job, keys: Sequence[str], verbose: bool = False, tags: dict | None = None):
    """Run ``job`` as one run over the partition range ``keys[0] .. keys[-1]`` on ``$DAGSTER_HOME``'s instance."""
    from dagster import DagsterInstance

    from .dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    range_tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]} if keys else {}
    with DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance, run_config=run_config(verbose), raise_on_error=False, tags={**range_tags, **(tags or {})}
        )


def homes(args) -> tuple[str, str]:
    """(data folder, DAGSTER_HOME): ``--home`` decides both; else $EMBERHARMONY_HOME (or ./data) and
    $DAGSTER_HOME (or the data folder's dagster_home). ``make`` sets both to the repository's data/."""
    if args.home:
        home = os.path.abspath(args.home)
        return home, os.path.join(home, "dagster_home")
    home = os.path.abspath(os.environ.get("EMBERHARMONY_HOME") or "data")
    return home, os.path.abspath(os.environ.get("DAGSTER_HOME") or os.path.join(home, "dagster_home"))


def ui_command(home: str, dagster_home: str, start: str, days: int) -> str:
    """The command that opens the UI on this run's instance, data and partitions."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = []
    if home != os.path.join(repo, "data") or dagster_home != os.path.join(home, "dagster_home"):
        env += [f"EMBERHARMONY_HOME={home}", f"DAGSTER_HOME={dagster_home}"]
    if start != DEFAULT_START or days != DEFAULT_DAYS:
        env += [
            f"EMBERHARMONY_PARTITION_START={start}",
            f"EMBERHARMONY_PARTITION_END={date.fromisoformat(start) + timedelta(days=days)}",
        ]
    in_repo = os.path.exists(os.path.join(repo, "Makefile")) and os.path.abspath(os.getcwd()) == repo
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    return " ".join(env + ["make ui" if in_repo else f"{dagster} dev -w {os.path.join(repo, 'workspace.yaml')}"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    home, dagster_home = homes(args)
    notes = prepare_environment(home, args.start, args.days, dagster_home, verbose=args.verbose)

    from emberharmony_core.demo import DemoConfig, write_demo_table

    from .assets import all_assets
    from .definitions import default_resources
    from .partitions import daily_partitions
    from .resources import BackendResource, DuckDBSourceResource
    from .summary import print_summary, run_header

    resources = default_resources()
    if args.backend:
        resources["backend"] = BackendResource(name=args.backend)
    source = resources["source"]
    if args.fresh:  # first, before the demo table is replaced: a run writing here makes it fail at once, naming it
        from emberharmony_core.store import StoreBusyError

        try:
            resources["store"].get().wipe()  # the store's writers lock, exclusive, without waiting
        except StoreBusyError as exc:
            print(f"--fresh: {exc}", file=sys.stderr)
            return 1
    if isinstance(source, DuckDBSourceResource):
        demo = DemoConfig(entities=args.entities, days=args.days, start=args.start)
        os.makedirs(home, exist_ok=True)
        started = time.perf_counter()
        rows = write_demo_table(source.database, demo, replace=args.fresh)
        print(f"demo table {demo.table} in {source.database}: {rows:,} rows ({time.perf_counter() - started:.1f} s)")
    for note in notes:
        print(note)

    keys = daily_partitions.get_partition_keys()
    end = date.fromisoformat(args.start) + timedelta(days=args.days)
    if end > date.today():
        print(
            f"note: days after {date.today()} have no partition yet (Dagster creates a day's partition once it "
            f"has ended); use --start to place the demo in the past"
        )
    if not keys:
        print("no partition has ended yet: nothing to run")
        return 1
    job = resolve_job(all_assets, resources)
    print(run_header(job, all_assets, keys, resources["backend"].name), flush=True)
    started = time.perf_counter()
    result = execute_range(
        job, keys, verbose=args.verbose, tags={"emberharmony/launched_by": "emberharmony_assets.main"}
    )
    seconds = time.perf_counter() - started
    return print_summary(
        result,
        seconds,
        keys=keys,
        store=resources["store"].get(),
        artifacts=os.path.abspath(resources["store"].base_path),
        strides=list(resources["settings"].strides),
        dagster_home=dagster_home,
        ui=ui_command(home, dagster_home, args.start, args.days),
        expected_checks=sum(len(a.check_keys) for a in all_assets),
    )


if __name__ == "__main__":
    sys.exit(main())
