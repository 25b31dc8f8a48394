"""A range on Dagster's run queue: every pass over a day's rows as one run per day, many at once.

    DAGSTER_HOME=... python -m emberharmony_assets.scale_out --from 2026-01-01 --to 2026-03-31

Waves, each started once the one before has succeeded (``emberharmony_assets.jobs.WAVES``): ``ingest_job`` (a
run per day), ``preprocessor_job`` (one run), ``features_job`` (a run per day), ``carry_job`` (one run over the
range: the light day-to-day fold), ``windows_job`` (a run per day), ``pca_models_job`` (one run),
``projection_job`` (a run per day). Runs per day are a ``dagster job backfill`` submitted to the instance's run
queue; the single runs execute in this process, on the same instance. How many runs go at once is the queue's business
(``QueuedRunCoordinator`` ``tag_concurrency_limits`` on ``emberharmony/pass``), and a daemon (``dagster-daemon
run``, or ``dagster dev``) must be running to launch them. Every run is an ordinary run of the instance: the
UI shows them, a failed one can be re-executed there, and this command stops at the first failed wave,
naming its failed runs. The artifacts equal those of one run over the range, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, PartitionKeyRange, RunsFilter
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from .jobs import WAVES

WAVE_TAG = "emberharmony/wave"  # one value per submitted wave: how its runs are found again
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
ROOT = Path(__file__).resolve().parents[1]


def _dagster() -> str:
    found = Path(sys.executable).parent / "dagster"
    return str(found) if found.exists() else (shutil.which("dagster") or "dagster")


def submit_days(job: str, first: str, last: str, workspace: str, wave: str) -> None:
    """Submit one run of ``job`` per day to the instance's run queue (``dagster job backfill``)."""
    command = ["job", "backfill", "-w", workspace, "-j", job, "--from", first, "--to", last, "--noprompt",
               "--tags", json.dumps({WAVE_TAG: wave})]
    done = subprocess.run([_dagster(), *command], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"dagster {' '.join(command)} failed ({done.returncode}): {done.stderr[-3000:]}")


def run_here(job: str, kind: str, first: str, last: str, instance: DagsterInstance, wave: str) -> None:
    """``job`` as one run in this process, on the instance (a global fit, or the carry fold over the range): it
    reads small per-day files only, so a run process of its own (~3 s to start) would cost more than the work."""
    from .definitions import build_definitions  # the resources as the environment says now (as the daemon's runs)

    tags = {WAVE_TAG: wave}
    if kind == "range":
        tags.update({ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
    build_definitions().resolve_job_def(job).execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def wait(instance: DagsterInstance, wave: str, expected: int, timeout: float, poll: float = 0.5) -> list:
    """The wave's run records once all ``expected`` runs have finished; a failed run, or none finishing in time,
    raises naming them."""
    deadline = time.monotonic() + timeout
    while True:
        records = instance.get_run_records(RunsFilter(tags={WAVE_TAG: wave}))
        if len(records) >= expected and all(r.dagster_run.status in FINISHED for r in records):
            break
        if time.monotonic() > deadline:
            states = sorted((r.dagster_run.tags.get("dagster/partition", "range"), r.dagster_run.status.value)
                            for r in records)
            raise TimeoutError(f"wave {wave}: {len(records)} of {expected} runs seen, not all finished after "
                               f"{timeout:.0f} s: {states} (is a dagster-daemon running for this DAGSTER_HOME?)")
        time.sleep(poll)
    failed = [r.dagster_run for r in records if r.dagster_run.status != DagsterRunStatus.SUCCESS]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) of the wave failed: "
                           + ", ".join(f"{run.run_id} ({run.job_name}, {run.tags.get('dagster/partition', 'range')}: "
                                       f"{run.status.value})" for run in failed)
                           + "; see them in the UI (Runs), fix the cause, re-execute them, then run this again from "
                             "that wave (--start-at)")
    return records


def scale_out(first: str, last: str, workspace: str = "workspace.yaml", start_at: str | None = None,
              timeout: float = 24 * 3600, instance: DagsterInstance | None = None, log=print) -> dict[str, list]:
    """Run every wave over ``first`` .. ``last`` (partition keys) on the instance's run queue; returns each job's
    run records."""
    from .partitions import daily_partitions

    days = daily_partitions.get_partition_keys_in_range(PartitionKeyRange(first, last))
    instance = instance or DagsterInstance.get()
    names = [job for job, _ in WAVES]
    if start_at is not None and start_at not in names:
        raise ValueError(f"--start-at must be one of {names}, got {start_at!r}")
    waves = WAVES[names.index(start_at):] if start_at else WAVES
    runs = {}
    for job, kind in waves:
        began, wave = time.monotonic(), uuid.uuid4().hex[:12]
        if kind == "days":
            submit_days(job, first, last, workspace, wave)
        else:
            run_here(job, kind, first, last, instance, wave)
        runs[job] = wait(instance, wave, len(days) if kind == "days" else 1, timeout)
        log(f"{job}: {len(runs[job])} run(s), {time.monotonic() - began:.1f} s")
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="first", required=True, help="first day (partition key)")
    parser.add_argument("--to", dest="last", required=True, help="last day (partition key), inclusive")
    parser.add_argument("-w", "--workspace", default="workspace.yaml", help="the workspace the daemon loads")
    parser.add_argument("--start-at", help="the job to start from (after a failed wave was repaired)")
    args = parser.parse_args(argv)
    if "DAGSTER_HOME" not in os.environ:
        parser.error("set DAGSTER_HOME to the instance whose run queue and daemon run the waves")
    started = time.monotonic()
    scale_out(args.first, args.last, args.workspace, args.start_at)
    print(f"done: {args.first} .. {args.last} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
