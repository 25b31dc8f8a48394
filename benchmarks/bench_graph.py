"""End-to-end benchmark: the seed's pipeline, a pandas + scikit-learn script, Dagster's bookkeeping floor and
the main job, in one invocation.

    python -m benchmarks.bench_graph [--shapes demo wide] [--entities E --days D] [--start 2026-01-01]
        [--skip-seed] [--skip-script] [--repeat 1] [--work DIR]        (make bench-graph ARGS="...")

For each shape the demo table is written once (not timed) to a DuckDB file; every method then
runs as its own process, on its own copy of that file, in its own fresh folder:

seed    ``python -m benchmarks.bench_seed``: the seed's pipeline end to end (LIMIT/OFFSET
        chunks, pd.concat, random split, prepare_data, windows + IncrementalPCA per 10k batch).
script  ``python -m benchmarks.script_pipeline``: the main job's work as a competent data scientist's
        pandas + scikit-learn script, holding the whole table in memory: one ordered read into a
        DataFrame, a hash split per entity with the job's fractions, cyclical sin/cos of the
        timestamp (hour, weekday, day of month, month), SimpleImputer + StandardScaler and
        OneHotEncoder in a ColumnTransformer fitted on train rows, windows of the job's rule from
        ``sliding_window_view`` (never across entities nor splits), ``PCA(n_components)`` per stride
        fitted on the train windows, every window projected and written to Parquet per stride.
        Its settings (window, strides, components, fractions, column roles) are the job's own
        (``script_pipeline.demo_arguments``, from ``emberharmony_assets.definitions``), so it does the
        same work: the same windows per stride.
floor   a no-op Dagster graph of the same shape as ``emberharmony_assets.definitions.defs``, built
        from its asset definitions (keys, deps and partition mappings, partitions, backfill
        policies, groups, check specs, multi-asset grouping and can_subset): every body returns
        ``MaterializeResult``s and passing ``AssetCheckResult``s. Materialised the way the main
        job materialises the real graph: one ``materialize`` run over the whole partition range
        (range tags) on the persistent ``DagsterInstance`` of a fresh ``DAGSTER_HOME``. What Dagster
        itself costs.
main    ``python -m emberharmony_assets.main --entities E --days D --start S --home HOME``: the real
        main job, in a fresh home holding a copy of the table (so it does not regenerate it).

Shapes: ``demo`` 64 entities x 90 days (276,480 rows, 3,072 rows a partition), ``wide`` 6,400 x 5
(307,200 rows a partition), ``big`` 32,000 x 2 (1,536,000 rows a partition; the main job only: the
seed's pipeline and the script hold the whole table, too large there), or
``--entities/--days`` for a custom shape. A method's process is started as
``python -m benchmarks.bench_graph --child METHOD ...``, which runs the method's real entry point
in-process (``runpy``, as ``python -m`` does) and reports the process's own peak RSS at exit.

Columns: seconds = wall time of the whole process (interpreter start, imports, run, exit), best of
``--repeat``; rows/s = table rows / seconds; peak RSS = the process's own high-water mark
(Linux ``VmHWM``, not ``ru_maxrss``, which would carry the parent's pages across fork + exec), or
that of its largest child when a child peaked higher, the largest over the repeats; in-run =
the pipeline's own seconds without interpreter start and imports (seed and script: their own timers; floor and
main: the ``materialize()`` call, as the main job prints it; it includes the "planned" events
Dagster writes before the run starts); events = entries the run wrote to the Dagster event log;
mat. = asset materialisation events (one per asset and partition).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

from emberharmony_assets.summary import folder_bytes

if TYPE_CHECKING:  # for annotations only: the functions below import dagster where they use it
    from dagster import AssetKey

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository (benchmarks/ is not installed)
SHAPES = {"demo": (64, 90), "wide": (6400, 5), "big": (32000, 2)}
MAIN_ONLY_SHAPES = {"big"}
METHODS = ("seed", "script", "floor", "main")
CADENCE_MINUTES = 30  # the demo's default: 48 readings a day per entity
TABLE = "sensor_readings"
MARKER = ".emberharmony-bench-graph"  # marks a shape folder this benchmark made (and may replace)
TAIL = 3000  # characters of a failed method's output shown
# "run 1a2b3c4d: succeeded in 52.6 s": the main job's summary line (and the floor's, same format)
RUN_LINE = re.compile(r"\brun [0-9a-f]+: (?:succeeded|FAILED) in ([0-9]+(?:\.[0-9]+)?) s")
# "windows: stride 1 1,120, stride 3 376, stride 5 224": the main job's windows per stride
WINDOWS_LINE = re.compile(r"^windows: ((?:stride [0-9]+ [0-9,]+(?:, )?)+)\s*$", re.M)


# ---------------------------------------------------------------------------------------------
# the no-op floor graph (imports dagster; used in the floor's child process and by the tests)
def topological_keys(specs) -> list[AssetKey]:
    """The specs' keys, each after the other keys (among them) it depends on; ties by name. A key's
    dependency on itself (its previous partition) does not order anything."""
    keys = {spec.key for spec in specs}
    upstream = {spec.key: ({dep.asset_key for dep in spec.deps} & keys) - {spec.key} for spec in specs}
    ordered: list[AssetKey] = []
    placed: set[AssetKey] = set()
    while len(ordered) < len(keys):
        ready = sorted((k for k in keys - placed if upstream[k] <= placed), key=lambda k: k.to_user_string())
        if not ready:  # a cycle cannot be defined in Dagster; keep going rather than loop
            ready = sorted(keys - placed, key=lambda k: k.to_user_string())
        ordered.extend(ready)
        placed.update(ready)
    return ordered


def noop_assets_like(assets_def):
    """A no-op ``multi_asset`` with ``assets_def``'s node name, specs, check specs, partitions,
    backfill policy and subsetting; its body reports every selected asset and check, nothing else."""
    from dagster import AssetCheckResult, MaterializeResult, multi_asset

    specs = list(assets_def.specs)
    check_specs = list(assets_def.check_specs)
    order = topological_keys(specs)  # a multi-asset must yield its outputs upstream first

    @multi_asset(
        name=assets_def.node_def.name,
        specs=specs,
        check_specs=check_specs or None,
        can_subset=assets_def.can_subset,
        partitions_def=assets_def.partitions_def,
        backfill_policy=assets_def.backfill_policy,
    )
    def _noop(context):
        try:
            keys = list(context.partition_keys)
        except Exception:  # unpartitioned
            keys = None
        metadata = {"rows": 0, "seconds": 0.0}
        partitioned = keys is not None and assets_def.partitions_def is not None
        if partitioned:
            metadata["partitions"] = len(keys)
        checks = sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
        for key in order:  # each selected asset, then its checks (as a real body would report them)
            if key in context.selected_asset_keys:
                if partitioned:  # as the real partitioned steps do: each partition's own metadata
                    for partition in keys:
                        context.add_asset_metadata(dict(metadata), asset_key=key, partition_key=partition)
                yield MaterializeResult(asset_key=key, metadata=None if partitioned else dict(metadata))
            for check_key in [c for c in checks if c.asset_key == key]:
                yield AssetCheckResult(
                    asset_key=key, check_name=check_key.name, passed=True, metadata={"rows_checked": 0, "note": "no-op"}
                )
        for check_key in [c for c in checks if c.asset_key not in order]:  # checks on assets defined elsewhere
            yield AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=check_key.name,
                passed=True,
                metadata={"rows_checked": 0, "note": "no-op"},
            )

    return _noop


def floor_assets(defs=None) -> list:
    """The floor graph: one no-op definition per materialisable asset definition of ``defs``
    (default ``emberharmony_assets.definitions.defs``), so it follows the real graph as it changes."""
    from dagster import AssetsDefinition

    if defs is None:
        from emberharmony_assets.definitions import defs
    out = []
    for assets_def in defs.assets or []:
        if isinstance(assets_def, AssetsDefinition) and assets_def.is_materializable:
            out.append(noop_assets_like(assets_def))
    if not out:
        raise ValueError("no materialisable asset definitions in defs")
    return out


def graph_partition_keys(assets: list) -> list[str]:
    """Partition keys of the graph's (first) partitions definition, as the main job takes them."""
    for assets_def in assets:
        if assets_def.partitions_def is not None:
            return list(assets_def.partitions_def.get_partition_keys())
    return []


def run_floor(argv: list[str]) -> int:
    """``--child floor``: materialise the floor graph like ``emberharmony_assets.main`` materialises the real one:
    the same environment (``prepare_environment``: data folder, partition range, DAGSTER_HOME and its
    dagster.yaml, range-planned events, quiet warnings), the same named job resolved the same way
    (``resolve_job``), one run over the whole range on the persistent instance (``execute_range``: range tags,
    the same run config and loggers)."""
    parser = argparse.ArgumentParser(prog="floor")
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--start", required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    home = os.path.abspath(args.home)
    from emberharmony_assets.main import execute_range, prepare_environment, resolve_job

    for note in prepare_environment(home, args.start, args.days, os.path.join(home, "dagster_home")):
        print(note)

    assets = floor_assets()
    keys = graph_partition_keys(assets)
    job = resolve_job(assets)
    print(
        f"floor: {len(assets)} no-op asset definitions over {len(keys)} partitions in one run of {job.name}", flush=True
    )
    started = time.perf_counter()
    result = execute_range(job, keys, tags={"emberharmony/launched_by": "benchmarks.bench_graph floor"})
    print(
        f"floor run {result.run_id[:8]}: {'succeeded' if result.success else 'FAILED'} in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0 if result.success else 1


# ---------------------------------------------------------------------------------------------
# the child: one method in this process, its own peak RSS written at exit
def _own_peak_rss_bytes() -> int:
    from benchmarks.bench_core import peak_rss_bytes  # VmHWM on Linux

    return peak_rss_bytes()


def _children_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run_child(argv: list[str]) -> int:
    """``--child METHOD RESULT_JSON [ARGS...]``: run METHOD's entry point here, then write the RSS figures."""
    import runpy

    method, result_path, rest = argv[0], argv[1], argv[2:]
    modules = {
        "seed": "benchmarks.bench_seed",
        "script": "benchmarks.script_pipeline",
        "main": "emberharmony_assets.main",
    }
    code = 1
    try:
        if method == "floor":
            code = run_floor(rest)
        elif method in modules:
            sys.argv = [modules[method], *rest]
            try:
                runpy.run_module(modules[method], run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        else:
            raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    finally:
        sys.stdout.flush()
        with open(result_path, "w") as out:
            json.dump(
                {
                    "rc": code,
                    "peak_rss_bytes": _own_peak_rss_bytes(),
                    "children_peak_rss_bytes": _children_peak_rss_bytes(),
                },
                out,
            )
    return code


# ---------------------------------------------------------------------------------------------
# the parent
@dataclass
class Run:
    method: str
    rc: int
    seconds: float
    peak_rss_bytes: int = 0
    in_run_seconds: float | None = None
    events: int | None = None
    materializations: int | None = None
    check_evaluations: int | None = None
    artifacts_bytes: int | None = None
    dagster_home_bytes: int | None = None
    log: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0


def dagster_figures(dagster_home: str) -> dict:
    """Events, materialisations, check evaluations and run seconds of the runs stored in ``dagster_home``."""
    from dagster import DagsterEventType, DagsterInstance

    figures = {"events": 0, "planned_events": 0, "materializations": 0, "check_evaluations": 0, "in_run_seconds": 0.0}
    planned = (DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
    with DagsterInstance.from_config(dagster_home) as instance:
        for run in instance.get_runs():
            logs = instance.all_logs(run.run_id)
            figures["events"] += len(logs)
            for entry in logs:
                kind = entry.dagster_event_type
                if kind == DagsterEventType.ASSET_MATERIALIZATION:
                    figures["materializations"] += 1
                elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
                    figures["check_evaluations"] += 1
                elif kind in planned:
                    figures["planned_events"] += 1
            stats = instance.get_run_stats(run.run_id)
            if stats.start_time and stats.end_time:
                figures["in_run_seconds"] += stats.end_time - stats.start_time
    return figures


def child_env(home: str | None) -> dict:
    """The caller's environment without EMBERHARMONY_* (but the backend) and DAGSTER_HOME; a fresh home's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("EMBERHARMONY_") and k != "EMBERHARMONY_BACKEND") and k != "DAGSTER_HOME"
    }
    if home is not None:
        env["DAGSTER_HOME"] = os.path.join(home, "dagster_home")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT, *filter(None, [env.get("PYTHONPATH")])]
    )  # finds benchmarks/ from any cwd
    return env


# Complexity: one branch per benchmark method, each a few lines; a linear launcher.
def run_method(  # noqa: C901
    method: str,
    folder: str,
    source_db: str,
    entities: int,
    days: int,
    start: str,
    timeout: float | None,
    script_args: Sequence[str] = (),
) -> Run:
    """One method in its own process, in ``folder`` (fresh); returns its figures. ``script_args``: the
    script's settings (``script_pipeline.demo_arguments()``)."""
    os.makedirs(folder)
    result_path = os.path.join(folder, "child.json")
    log_path = os.path.join(folder, "output.log")
    home = None
    if method == "seed":
        database = os.path.join(folder, "demo.duckdb")
        shutil.copyfile(source_db, database)
        rest = ["--database", database, "--table", TABLE, "--json", os.path.join(folder, "seed.json")]
    elif method == "script":
        database = os.path.join(folder, "demo.duckdb")
        shutil.copyfile(source_db, database)
        rest = [
            "--database",
            database,
            "--out",
            os.path.join(folder, "projections"),
            "--json",
            os.path.join(folder, "script.json"),
            *script_args,
        ]
    elif method == "main":
        home = os.path.join(folder, "home")
        os.makedirs(home)
        shutil.copyfile(source_db, os.path.join(home, "demo.duckdb"))  # the main job's default table path
        rest = ["--entities", str(entities), "--days", str(days), "--start", start, "--home", home]
    elif method == "floor":
        home = os.path.join(folder, "home")
        os.makedirs(home)
        rest = ["--days", str(days), "--start", start, "--home", home]
    else:
        raise ValueError(method)
    command = [sys.executable, "-m", "benchmarks.bench_graph", "--child", method, result_path, *rest]
    with open(log_path, "w") as log:
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=child_env(home), timeout=timeout, cwd=os.getcwd()
            )
            rc = done.returncode
        except subprocess.TimeoutExpired:
            rc = 124
        seconds = time.perf_counter() - started
    with open(log_path) as log:
        output = log.read()
    run = Run(method=method, rc=rc, seconds=seconds, log=output)
    if os.path.exists(result_path):
        with open(result_path) as result:
            child = json.load(result)
        run.peak_rss_bytes = max(child["peak_rss_bytes"], child["children_peak_rss_bytes"])
        run.extra["own_peak_rss_bytes"] = child["peak_rss_bytes"]
        run.extra["children_peak_rss_bytes"] = child["children_peak_rss_bytes"]
    if method == "seed" and os.path.exists(os.path.join(folder, "seed.json")):
        with open(os.path.join(folder, "seed.json")) as result:
            seed = json.load(result)
        run.in_run_seconds = seed["seconds"]
        run.extra["seed"] = seed
    if method == "script" and os.path.exists(os.path.join(folder, "script.json")):
        with open(os.path.join(folder, "script.json")) as result:
            script = json.load(result)
        run.in_run_seconds = script["seconds"]
        run.extra["script"] = script
        run.extra["windows"] = {int(k): int(v) for k, v in script["windows"].items()}
    if home is not None and os.path.isdir(os.path.join(home, "dagster_home")):
        try:
            figures = dagster_figures(os.path.join(home, "dagster_home"))
            run.events, run.materializations = figures["events"], figures["materializations"]
            run.check_evaluations, run.in_run_seconds = figures["check_evaluations"], figures["in_run_seconds"]
            run.extra["planned_events"] = figures["planned_events"]
            run.extra["run_events_seconds"] = figures["in_run_seconds"]
        except Exception as exc:  # a half-written home after a failure: report what ran
            run.extra["dagster_error"] = repr(exc)
        run.dagster_home_bytes = folder_bytes(os.path.join(home, "dagster_home"))
        printed = RUN_LINE.findall(output)  # the materialize() call as timed by main / run_floor
        if printed:
            run.in_run_seconds = float(printed[-1])
    if method == "main" and home is not None:
        run.artifacts_bytes = folder_bytes(os.path.join(home, "artifacts"))
        printed = WINDOWS_LINE.findall(output)
        if printed:
            run.extra["windows"] = {
                int(s): int(n.replace(",", ""))
                for s, n in re.findall(r"stride ([0-9]+) ([0-9]+(?:,[0-9]{3})*)", printed[-1])
            }
    return run


def best_of(runs: list[Run]) -> Run:
    """The fastest successful repeat (else the last), with the largest peak RSS over the repeats."""
    good = [r for r in runs if r.ok]
    best = min(good, key=lambda r: r.seconds) if good else runs[-1]
    best.peak_rss_bytes = max(r.peak_rss_bytes for r in runs)
    best.extra["repeats"] = len(runs)
    return best


def make_table(database: str, entities: int, days: int, start: str) -> tuple[int, float]:
    from emberharmony_core.demo import DemoConfig, write_demo_table

    started = time.perf_counter()
    rows = write_demo_table(
        database,
        DemoConfig(entities=entities, days=days, start=start, cadence_minutes=CADENCE_MINUTES, table=TABLE),
        replace=True,
    )
    return rows, time.perf_counter() - started


def _mib(n: int | float) -> str:
    return f"{n / 2**20:,.0f}"


def _ratio(a: Run | None, b: Run | None, attr: str = "seconds") -> str:
    if a is None or b is None or not (a.ok and b.ok):
        return "-"
    x, y = getattr(a, attr), getattr(b, attr)
    return f"{x / y:.2f}x" if x and y else "-"


# Complexity: one row per method in a fixed order; a linear table build.
def report(rows: int, db_bytes: int, runs: dict[str, Run], skipped: dict[str, str]) -> list[str]:  # noqa: C901
    lines = []
    header = (
        f"{'method':<7} {'seconds':>8} {'rows/s':>9} {'peak RSS MiB':>12} {'in-run s':>9} "
        f"{'events':>7} {'mat.':>6} {'status':>7}"
    )
    lines += [header, "-" * len(header)]
    for method in METHODS:
        if method in skipped:
            lines.append(f"{method:<7} {'skipped: ' + skipped[method]}")
            continue
        r = runs.get(method)
        if r is None:
            continue
        in_run = f"{r.in_run_seconds:.1f}" if r.in_run_seconds is not None else "-"
        events = f"{r.events:,}" if r.events is not None else "-"
        mats = f"{r.materializations:,}" if r.materializations is not None else "-"
        status = "ok" if r.ok else ("TIMEOUT" if r.rc == 124 else f"rc={r.rc}")
        lines.append(
            f"{method:<7} {r.seconds:>8.1f} {rows / r.seconds:>9,.0f} {_mib(r.peak_rss_bytes):>12} "
            f"{in_run:>9} {events:>7} {mats:>6} {status:>7}"
        )
    seed, script, floor, main = (runs.get(m) for m in METHODS)
    lines.append("")
    lines.append(
        f"seed/main (speed-up): {_ratio(seed, main)} wall, {_ratio(seed, main, 'in_run_seconds')} in-run;   "
        f"main/floor: {_ratio(main, floor)} wall, {_ratio(main, floor, 'in_run_seconds')} in-run"
    )
    lines.append(
        f"script/main (speed-up): {_ratio(script, main)} wall, {_ratio(script, main, 'in_run_seconds')} in-run"
    )
    if main is not None and main.artifacts_bytes is not None:
        lines.append(
            f"main artifacts: {_mib(main.artifacts_bytes)} MiB = {main.artifacts_bytes / db_bytes:.2f}x the DuckDB "
            f"file ({_mib(db_bytes)} MiB); its DAGSTER_HOME: {_mib(main.dagster_home_bytes or 0)} MiB"
        )
    if floor is not None and floor.ok and floor.events:
        run_s = floor.in_run_seconds or 0.0
        assert floor.materializations is not None  # set with floor.events (dagster_figures)
        lines.append(
            f"floor cost: {floor.events:,} events written ({floor.extra.get('planned_events', 0):,} of them 'planned' "
            f"events written before the run starts), {floor.materializations:,} asset-partition materialisations, "
            f"{floor.check_evaluations:,} check evaluations; materialize() {run_s:.2f} s = "
            f"{1000 * run_s / floor.events:.2f} ms/event, {1000 * run_s / max(floor.materializations, 1):.1f} ms/"
            f"materialisation; whole process {floor.seconds:.1f} s = {1000 * floor.seconds / floor.events:.2f} ms/event"
        )
    if seed is not None and seed.ok and "seed" in seed.extra:
        s = seed.extra["seed"]
        lines.append(f"seed steps (s): {s.get('seconds_by_step')}; windows per stride {s.get('windows')}")
    if script is not None and script.ok and "script" in script.extra:
        s = script.extra["script"]
        lines.append(
            f"script steps (s): {s.get('seconds_by_step')}; windows per stride {s.get('windows')} (the job's "
            f"rule; train {s.get('train_windows')}); {s.get('features')} features"
        )
        if main is not None and main.ok and "windows" in main.extra:
            same = script.extra["windows"] == main.extra["windows"]
            lines.append(
                f"equal work: windows per stride, script {script.extra['windows']}, main {main.extra['windows']}: "
                + ("the same" if same else "DIFFERENT")
            )
    for r in runs.values():
        if not r.ok:
            lines.append(f"\n{r.method} FAILED (rc {r.rc}); last output:\n{r.log[-TAIL:]}")
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_graph", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=sorted(SHAPES),
        default=None,
        help="demo (64 x 90 days), wide (6,400 x 5 days), big (32,000 x 2 days, main only); "
        "default: demo wide, or only the custom shape when --entities/--days are given",
    )
    parser.add_argument("--entities", type=int, default=None, help="a custom shape: entities (default 64)")
    parser.add_argument("--days", type=int, default=None, help="a custom shape: days = daily partitions (default 90)")
    parser.add_argument("--start", default="2026-01-01", help="first day (every partition must have ended by today)")
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed's pipeline")
    parser.add_argument("--skip-script", action="store_true", help="do not run the pandas + scikit-learn script")
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is reported (default 1)")
    parser.add_argument(
        "--work", default=None, help="folder for tables, homes and logs (kept); default a temp dir, removed"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per method run (default none)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    custom = args.entities is not None or args.days is not None
    shapes = []
    for name in dict.fromkeys(args.shapes or ([] if custom else ["demo", "wide"])):
        shapes.append((name, *SHAPES[name]))
    if custom:
        shapes.append(("custom", args.entities or 64, args.days or 90))
    for name, entities, days in shapes:
        if entities < 1 or days < 1:
            parser.error(f"shape {name}: entities and days must be >= 1")
        end = date.fromisoformat(args.start) + timedelta(days=days)
        if end > date.today():
            parser.error(
                f"shape {name}: days {args.start} .. {end - timedelta(days=1)} run past today ({date.today()}); "
                f"Dagster has no partition for a day that has not ended: choose an earlier --start"
            )
    args.shape_list = shapes
    return args


# Complexity: argument parsing, table build, methods and report in order; one linear script.
def main(argv: list[str] | None = None) -> int:  # noqa: C901
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return run_child(argv[1:])
    args = parse_args(argv)
    work = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="emberharmony-bench-graph-")
    os.makedirs(work, exist_ok=True)
    print(
        f"emberharmony bench-graph: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}, "
        f"best of {args.repeat}, work folder {work}" + ("" if args.work else " (removed after)"),
        flush=True,
    )
    failed = False
    script_args = []
    if not args.skip_script:  # the job's settings (imports Dagster, here in the parent: the methods' processes don't)
        from benchmarks.script_pipeline import demo_arguments

        script_args = demo_arguments()
    try:
        for shape, entities, days in args.shape_list:
            shape_dir = os.path.join(work, shape)
            if os.path.exists(shape_dir):  # a previous bench's folder (marked) is replaced; anything else is kept
                if not os.path.exists(os.path.join(shape_dir, MARKER)):
                    raise SystemExit(f"{shape_dir} exists and was not made by this benchmark: choose another --work")
                shutil.rmtree(shape_dir)
            os.makedirs(shape_dir)
            open(os.path.join(shape_dir, MARKER), "w").close()
            database = os.path.join(shape_dir, "source.duckdb")
            rows, made = make_table(database, entities, days, args.start)
            db_bytes = os.path.getsize(database)
            print(
                f"\n== {shape}: {entities:,} entities x {days} days = {rows:,} rows ({rows // days:,} rows a "
                f"partition, {days} partitions from {args.start}); DuckDB table {_mib(db_bytes)} MiB, "
                f"written in {made:.1f} s (not timed)",
                flush=True,
            )
            skipped = {}
            if shape in MAIN_ONLY_SHAPES:
                skipped = {
                    "seed": "too slow and large at this shape (whole table in one DataFrame, Python-loop windows)",
                    "script": "too large at this shape (whole table and every window in memory)",
                    "floor": "main only at this shape (peak RSS)",
                }
            else:
                if args.skip_seed:
                    skipped["seed"] = "--skip-seed"
                if args.skip_script:
                    skipped["script"] = "--skip-script"
            runs = {}
            for method in METHODS:
                if method in skipped:
                    continue
                attempts = []
                for repeat in range(args.repeat):
                    print(f"  {method} ({repeat + 1}/{args.repeat}) ...", end=" ", flush=True)
                    run = run_method(
                        method,
                        os.path.join(shape_dir, f"{method}-{repeat + 1}"),
                        database,
                        entities,
                        days,
                        args.start,
                        args.timeout,
                        script_args,
                    )
                    print(
                        f"{run.seconds:.1f} s, {_mib(run.peak_rss_bytes)} MiB"
                        + ("" if run.ok else f", FAILED rc {run.rc}"),
                        flush=True,
                    )
                    attempts.append(run)
                runs[method] = best_of(attempts)
                failed |= not runs[method].ok
            print()
            print("\n".join(report(rows, db_bytes, runs, skipped)), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(
        "\nseconds: wall time of each method's whole process; peak RSS: that process's own high-water mark (VmHWM) or "
        "its largest child's; in-run: seed's and script's own timers, floor/main the materialize() call; events: "
        "Dagster event-log entries; mat.: asset materialisation events."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
