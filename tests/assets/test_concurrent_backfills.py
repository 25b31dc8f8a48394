"""A backfill split into several runs, 2 at once through Dagster's own run queue, equals one run over the range.

The multi-run path is the one README "Running at scale" gives a user, on a persistent instance in a temporary
``DAGSTER_HOME`` whose ``dagster.yaml`` sets the ``QueuedRunCoordinator`` (a tag concurrency limit of 2 on
``emberharmony/pass=ingest``, the tag every ``ingest_job`` run carries, under a global ``max_concurrent_runs`` of 4)
and the ``DefaultRunLauncher``. Nothing here stands in for Dagster: real CLI, real daemon, real run processes.

1. ``dagster job backfill -w workspace.yaml -j ingest_job --partitions d1,...,d4``: the CLI submits one run per day to
   the queue (all QUEUED: no daemon runs yet, so its first dequeue finds them all and takes two together);
2. ``dagster-daemon run -w workspace.yaml``: its queued-run coordinator dequeues them, at most 2 in progress, and the
   launcher starts each as its own process (``dagster api execute_run``) through the daemon's code server. The two
   runs of a pair read the one DuckDB file (read-only) and write into the one artifact store at the same time, each
   holding the store's writers lock shared, each day's files under their own file locks;
3. in this process, on the same instance, ``fit_and_windows_job`` over the range as ONE run (the preprocessor, then
   the windows pass in day order, ``pca_stats``, ``pca_models``, ``projected_windows``).

The reference is ``full_refresh_job`` over the same range as one run, on its own persistent instance. Asserted: two
ingest runs were really executing at once (RUN_START to the end, the run records' own times) and never more than
two were in progress (launch to end, as the queue counts); every artifact file is byte-identical (Parquet, npz,
JSON; the store's hidden lock files left out) and ``pca_models``' arrays equal.

What makes the overlap hold on a 2-core machine is ``dequeue_use_threads``: without it the daemon launches one run at
a time and each launch waits for its process to start (~3 s), longer than a run here lasts, so the runs went one after
another (measured). With it, the two runs of a pair start 0.04-0.6 s apart (two processes importing Dagster at once)
and each executes for 0.6-1.7 s, mostly Dagster's own per-run cost (doubling the rows of a day changed little).
Not exercised here: the other run launchers (``dagster-k8s``' ``K8sRunLauncher``, Docker, ECS)
and executors (``k8s_job_executor``, ``celery_executor``), which need their clusters; the run queue and its tag
limits in front of them are the same.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from emberharmony_assets import testing
from emberharmony_assets.definitions import DEMO_SOURCE, build_definitions
from emberharmony_assets.jobs import INGEST_PASS_TAG
from emberharmony_assets.main import dagster_yaml
from emberharmony_assets.partitions import daily_partitions
from emberharmony_assets.resources import ArtifactStoreResource, BackendResource, DuckDBSourceResource
from emberharmony_assets.testing import default_signals, stop_process_group
from emberharmony_core.demo import DemoConfig, write_demo_table
from emberharmony_core.store import ArtifactStore

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEMO = DemoConfig(entities=64, days=4, cadence_minutes=5, start="2026-01-01")  # 18,432 rows a day
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
AT_ONCE = 2
STRIDES = (1, 3, 5)
QUEUE_S = 150
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}

DAGSTER_YAML = f"""\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: {INGEST_PASS_TAG[0]}
        value: {INGEST_PASS_TAG[1]}
        limit: {AT_ONCE}
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
    dequeue_num_workers: {AT_ONCE}
run_launcher:
  module: dagster.core.launcher
  class: DefaultRunLauncher
auto_materialize:  # the daemons this test does not use, off: less CPU taken from the runs on 2 cores
  enabled: false
  use_sensors: false
freshness:
  enabled: false
"""


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every artifact file, by path; the store's lock files (hidden, empty) left out."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def assert_same_artifacts(one: Path, other: Path, days: int) -> None:
    """Every artifact file byte-identical (the days' raw_chunk files among them), and the same PCA models."""
    a, b = file_digests(one), file_digests(other)
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    assert len([p for p in a if p.startswith("raw_chunk")]) == days
    differ = sorted(p for p in a if a[p] != b[p])
    assert not differ, differ
    for stride in STRIDES:
        x, y = (ArtifactStore(str(folder)).read_arrays("pca_models", f"stride={stride}") for folder in (one, other))
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals that hold one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])  # ends first on ties
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


def graph_resources(database: Path, artifacts: Path) -> dict:
    """The resources the daemon's runs get from the environment (EMBERHARMONY_HOME), spelled out."""
    return {
        "source": DuckDBSourceResource(database=str(database), **DEMO_SOURCE),
        "backend": BackendResource(name="numpy"),
        "store": ArtifactStoreResource(base_path=str(artifacts)),
    }


def run_job(name: str, resources: dict, instance: DagsterInstance):
    job = build_definitions(**resources).resolve_job_def(name)
    # a job (not materialize_days' asset selection): the range through testing.range_tags
    result = job.execute_in_process(instance=instance, tags=testing.range_tags(DAYS[0], DAYS[-1]))
    assert result.success
    return result


def step_seconds(instance: DagsterInstance, run_id: str, step: str) -> float:
    times = {}
    for kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
        times[kind] = [r.timestamp for r in instance.all_logs(run_id, of_type=kind) if r.step_key == step]
    return times[DagsterEventType.STEP_SUCCESS][0] - times[DagsterEventType.STEP_START][0]


def run_errors(instance: DagsterInstance, run) -> str:
    """A run's status and its error events, for a failure message."""
    lines = [f"run {run.run_id} ({run.tags.get('dagster/partition')}): {run.status.value}"]
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if (isinstance(entry.level, int) and entry.level >= 40) or (
            event is not None and event.event_type in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE)
        ):
            lines.append(f"  {entry.message or ''} {event.event_specific_data if event is not None else ''}"[:3000])
    return "\n".join(lines)


def wait_for_runs(instance: DagsterInstance, daemon: subprocess.Popen, log: Path) -> list:
    deadline = time.monotonic() + QUEUE_S
    while time.monotonic() < deadline:
        records = instance.get_run_records()
        if len(records) == len(DAYS) and all(r.dagster_run.status in FINISHED for r in records):
            return list(records)
        assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    states = [(r.dagster_run.tags.get("dagster/partition"), r.dagster_run.status.value) for r in records]
    raise AssertionError(f"runs not finished after {QUEUE_S} s: {states}\n{log.read_text()[-4000:]}")


def test_a_backfill_run_per_day_two_at_once_through_the_run_queue_equals_one_run(tmp_path):
    single_data, multi_data = tmp_path / "single", tmp_path / "multi"
    home, reference_home = tmp_path / "dagster_home", tmp_path / "reference_home"
    for folder in (single_data, multi_data, home, reference_home):
        folder.mkdir()
    assert write_demo_table(multi_data / "demo.duckdb", DEMO) == DEMO.rows
    # the main job's instance settings (pooled SQLite storage, written to by every run process here at
    # once), telemetry off, plus the run queue
    settings = dagster_yaml(str(home)).replace("telemetry:\n  enabled: true\n", "")
    (home / "dagster.yaml").write_text(settings + DAGSTER_YAML)

    # the reference: the whole graph over the range, one run, its own persistent instance
    started = time.monotonic()
    with DagsterInstance.local_temp(str(reference_home)) as reference_instance:
        reference = run_job(
            "full_refresh_job",
            graph_resources(multi_data / "demo.duckdb", single_data / "artifacts"),
            reference_instance,
        )
        single_ingest_s = step_seconds(reference_instance, reference.run_id, "ingest")
    single_s = time.monotonic() - started

    # the multi-run backfill: one ingest run per day through the run queue, then one run for the rest
    end = f"{daily_partitions.end:%Y-%m-%d}" if daily_partitions.end else ""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EMBERHARMONY_HOME": str(multi_data),
        "EMBERHARMONY_SOURCE": "duckdb",
        "EMBERHARMONY_BACKEND": "numpy",
        "EMBERHARMONY_PARTITION_START": f"{daily_partitions.start:%Y-%m-%d}",
        "EMBERHARMONY_PARTITION_END": end,
    }
    started = time.monotonic()
    instance = DagsterInstance.from_config(str(home))
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    instance.get_run_records()  # create the SQLite storages here: two processes creating them at once collide
    submit = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "backfill",
            "-w",
            "workspace.yaml",
            "-j",
            "ingest_job",
            "--partitions",
            ",".join(DAYS),
            "--noprompt",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submit.returncode == 0 and "Launched backfill" in submit.stdout, submit.stdout + submit.stderr
    assert [r.dagster_run.status for r in instance.get_run_records()] == [DagsterRunStatus.QUEUED] * len(DAYS)
    submitted_s = time.monotonic() - started
    log, daemon_started = tmp_path / "daemon.log", time.time()
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )
    try:
        records = wait_for_runs(instance, daemon, log)
    finally:
        stop_process_group(daemon, 20)
    failed = [r.dagster_run for r in records if r.dagster_run.status != DagsterRunStatus.SUCCESS]
    assert not failed, "\n".join(run_errors(instance, run) for run in failed) + "\n" + log.read_text()[-4000:]
    runs = sorted(records, key=lambda r: r.start_time)
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in runs) == DAYS  # one run per day
    assert {r.dagster_run.job_name for r in runs} == {"ingest_job"}
    assert all(r.dagster_run.tags.get(INGEST_PASS_TAG[0]) == INGEST_PASS_TAG[1] for r in runs)
    assert len({r.dagster_run.tags["dagster/backfill"] for r in runs}) == 1
    # executing (RUN_START to the end, the run records' times): two at once, really
    intervals = [(r.start_time, r.end_time) for r in runs]
    assert most_at_once(intervals) == AT_ONCE, intervals
    # in progress as the queue counts them (launched, i.e. STARTING, to the end): never more than the tag limit
    launched = [
        instance.all_logs(r.dagster_run.run_id, of_type=DagsterEventType.RUN_STARTING)[0].timestamp for r in runs
    ]  # runs sorted by start; their launches too (a pair is launched together)
    launched_and_ended = [(t, r.end_time) for t, r in zip(launched, runs, strict=True)]
    assert most_at_once(launched_and_ended) == AT_ONCE, (launched, intervals)
    ingest_wall_s = max(e for _, e in intervals) - min(launched)
    first_launch_s = min(launched) - daemon_started

    rest_started = time.monotonic()
    run_job("fit_and_windows_job", graph_resources(multi_data / "demo.duckdb", multi_data / "artifacts"), instance)
    assert len(instance.get_run_records()) == len(DAYS) + 1
    rest_s = time.monotonic() - rest_started
    multi_s = time.monotonic() - started

    assert_same_artifacts(single_data / "artifacts", multi_data / "artifacts", len(DAYS))

    print(
        f"\n{len(DAYS)} days x {DEMO.rows // DEMO.days:,} rows. ONE RUN (full_refresh_job) {single_s:.1f} s, "
        f"its ingest step {single_ingest_s:.1f} s. MULTI-RUN {multi_s:.1f} s: submit {len(DAYS)} runs (dagster job "
        f"backfill) {submitted_s:.1f} s; daemon start to first launch {first_launch_s:.1f} s; ingest runs, "
        f"{AT_ONCE} at once, first launch to last end {ingest_wall_s:.1f} s (launched / started-ended, s: "
        + ", ".join(
            f"{t - min(launched):.1f} / {s - min(launched):.1f}-{e - min(launched):.1f}"
            for t, (s, e) in zip(launched, intervals, strict=True)
        )
        + f"); fit_and_windows_job (one run) {rest_s:.1f} s"
    )
