"""A range on Dagster's run queue: every pass over a day's rows in runs of their own, many at once.

    dagster dev -w workspace.yaml          # or dagster-webserver + dagster-daemon, on a queued instance
    DAGSTER_HOME=... python -m emberharmony_assets.scale_out --from 2026-01-01 --to 2026-03-31 --runs-per-wave 16

Waves, each started once the one before has succeeded (``emberharmony_assets.jobs.WAVES``): ``ingest_job``,
``preprocessor_job`` (one run), ``features_job``, ``carry_job`` (one run over the range: the light day-to-day
fold), ``windows_job``, ``pca_models_job`` (one run), ``projection_job``. A wave over days is ``--runs-per-wave``
runs (default: one per day), each a contiguous range of days, submitted to the instance's run queue through the
webserver's GraphQL API (``dagster_graphql.DagsterGraphQLClient``: a submission takes milliseconds; the runs start
as processes of their own, seconds each before their first row, so on a long range give about as many runs as
workers: docs/scale.md); the single runs execute in this process, on the same instance. How many runs go at once is
the queue's business (``QueuedRunCoordinator`` ``tag_concurrency_limits`` on ``emberharmony/pass``). Every run is
an ordinary run of the instance: the UI shows them, a failed one can be re-executed there, and this command stops
at the first failed wave, naming its failed runs. The artifacts equal those of one run over the range, byte for
byte.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlparse

from dagster import DagsterInstance, DagsterRunStatus, PartitionKeyRange, RunRecord, RunsFilter

from .dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from .jobs import PASS_TAG, WAVES

WAVE_TAG = "emberharmony/wave"  # one value per submitted wave: how its runs are found again
LOCATION = "emberharmony"  # workspace.yaml's location_name
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def queue_yaml(runs_at_once: int) -> str:
    """The recipe's run queue as ``dagster.yaml`` lines: the ``QueuedRunCoordinator`` with at most ``runs_at_once``
    runs of each pass at once (``tag_concurrency_limits`` on ``emberharmony/pass``, one limit per value), the runs
    of a dequeue launched together, and the daemons the recipe does not use off."""
    return f"""\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {4 * runs_at_once}
    tag_concurrency_limits:
      - key: {PASS_TAG}
        value:
          applyLimitPerUniqueValue: true
        limit: {runs_at_once}
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
    dequeue_num_workers: {runs_at_once}
auto_materialize:
  enabled: false
  use_sensors: false
"""


def day_groups(days: Sequence[str], runs: int) -> list[tuple[str, str]]:
    """``days`` cut into at most ``runs`` contiguous (first, last) ranges of near-equal length, in order."""
    runs = max(1, min(int(runs), len(days)))
    size, extra = divmod(len(days), runs)
    out, start = [], 0
    for i in range(runs):
        stop = start + size + (i < extra)
        out.append((days[start], days[stop - 1]))
        start = stop
    return out


def range_tags(first: str, last: str) -> dict[str, str]:
    """The tags that make a run of an asset job materialise ``first`` .. ``last`` (one day: its partition)."""
    if first == last:
        return {"dagster/partition": first}
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def submit_runs(client, job: str, groups: list[tuple[str, str]], wave: str) -> None:
    """One run of ``job`` per group of days, submitted to the instance's run queue through the webserver."""
    for first, last in groups:
        client.submit_job_execution(
            job, repository_location_name=LOCATION, tags={WAVE_TAG: wave, **range_tags(first, last)}
        )


def run_here(job: str, kind: str, first: str, last: str, instance: DagsterInstance, wave: str) -> None:
    """``job`` as one run in this process, on the instance (a global fit, or the carry fold over the range): it
    reads small per-day files only, so a run process of its own (seconds to start) would cost more than the work."""
    from .definitions import build_definitions  # the resources as the environment says now (as the daemon's runs)

    tags = {WAVE_TAG: wave, **(range_tags(first, last) if kind == "range" else {})}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the run's events still go to the instance
    build_definitions().resolve_job_def(job).execute_in_process(
        run_config=quiet, instance=instance, tags=tags, raise_on_error=False
    )


def wait(instance: DagsterInstance, wave: str, expected: int, timeout: float, poll: float = 0.5) -> Sequence[RunRecord]:
    """The wave's run records once all ``expected`` runs have finished; a failed run, or none finishing in time,
    raises naming them."""
    deadline = time.monotonic() + timeout
    while True:
        records = instance.get_run_records(RunsFilter(tags={WAVE_TAG: wave}))
        if len(records) >= expected and all(r.dagster_run.status in FINISHED for r in records):
            break
        if time.monotonic() > deadline:
            states = sorted(
                (r.dagster_run.tags.get("dagster/partition", "range"), r.dagster_run.status.value) for r in records
            )
            raise TimeoutError(
                f"wave {wave}: {len(records)} of {expected} runs seen, not all finished after "
                f"{timeout:.0f} s: {states} (is a dagster-daemon running for this DAGSTER_HOME?)"
            )
        time.sleep(poll)
    failed = [r.dagster_run for r in records if r.dagster_run.status != DagsterRunStatus.SUCCESS]
    if failed:
        raise RuntimeError(
            f"{len(failed)} run(s) of the wave failed: "
            + ", ".join(
                f"{run.run_id} ({run.job_name}, {run.tags.get('dagster/partition', 'range')}: {run.status.value})"
                for run in failed
            )
            + "; see them in the UI (Runs), fix the cause, re-execute them, then run this again from "
            "the next wave (--start-at)"
        )
    return records


def scale_out(
    first: str,
    last: str,
    url: str = "http://127.0.0.1:3000",
    runs_per_wave: int | None = None,
    start_at: str | None = None,
    timeout: float = 24 * 3600,
    instance: DagsterInstance | None = None,
    log=print,
) -> dict[str, Sequence[RunRecord]]:
    """Run every wave over ``first`` .. ``last`` (partition keys) on the instance's run queue, submitting through
    the webserver at ``url``; returns each job's run records."""
    from dagster_graphql import DagsterGraphQLClient

    from .partitions import daily_partitions

    days = daily_partitions.get_partition_keys_in_range(PartitionKeyRange(first, last))
    groups = day_groups(days, runs_per_wave or len(days))
    where = urlparse(url)
    if where.hostname is None:
        raise ValueError(f"url {url!r} names no host, e.g. http://127.0.0.1:3000")
    client = DagsterGraphQLClient(where.hostname, port_number=where.port, use_https=where.scheme == "https")
    instance = instance or DagsterInstance.get()
    names = [job for job, _ in WAVES]
    if start_at is not None and start_at not in names:
        raise ValueError(f"--start-at must be one of {names}, got {start_at!r}")
    runs = {}
    for job, kind in WAVES[names.index(start_at) :] if start_at else WAVES:
        began, wave = time.monotonic(), uuid.uuid4().hex[:12]
        if kind == "days":
            submit_runs(client, job, groups, wave)
        else:
            run_here(job, kind, first, last, instance, wave)
        runs[job] = wait(instance, wave, len(groups) if kind == "days" else 1, timeout)
        log(f"{job}: {len(runs[job])} run(s), {time.monotonic() - began:.1f} s")
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="first", required=True, help="first day (partition key)")
    parser.add_argument("--to", dest="last", required=True, help="last day (partition key), inclusive")
    parser.add_argument(
        "--url", default="http://127.0.0.1:3000", help="the Dagster webserver (dagster dev) to submit to"
    )
    parser.add_argument(
        "--runs-per-wave",
        type=int,
        default=None,
        help="runs per wave over days, each a range of days (default: one per day)",
    )
    parser.add_argument("--start-at", help="the job to start from (after a failed wave was repaired)")
    args = parser.parse_args(argv)
    if "DAGSTER_HOME" not in os.environ:
        parser.error("set DAGSTER_HOME to the instance whose run queue and daemon run the waves")
    started = time.monotonic()
    scale_out(args.first, args.last, args.url, args.runs_per_wave, args.start_at)
    print(f"done: {args.first} .. {args.last} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
