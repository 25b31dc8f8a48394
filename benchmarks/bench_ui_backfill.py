"""What the UI's asset graph *Materialize all* costs: an asset backfill of every asset over N daily partitions.

    .venv/bin/python benchmarks/bench_ui_backfill.py --days 2

A demo table (24 entities, 4 days, hourly), a throw-away instance (``dagster_yaml``, telemetry off), ``dagster dev
-w workspace.yaml`` on a free port with the env of ``tests/assets/test_dagster_dev_backfill.py``; then, over GraphQL,
``launchPartitionBackfill`` with ``assetSelection`` = every asset key (unpartitioned ones included, no checks),
``partitionNames`` = the first N days, ``fromFailure: false`` (what the UI sends; no run config). Polls the
backfill until it ends (15 min at most) and prints its runs (tag ``dagster/backfill``), each run's assets, partition
range and start/end relative to the launch, the wall time launch -> completion and the sum of the runs' own times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emberharmony_assets.testing import DagsterDev

ROOT = Path(__file__).resolve().parents[1]
BACKFILL_S = 15 * 60
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

LAUNCH = """mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message } ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
BACKFILL = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
    ... on PartitionBackfill { status timestamp endTimestamp error { message stack } }
    ... on PythonError { message } ... on BackfillNotFoundError { message } } }"""
RUNS = """query ($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) { __typename
    ... on Runs { results { runId status creationTime startTime endTime assetSelection { path }
        tags { key value } } } ... on PythonError { message } } }"""
RUN_ERRORS = """query ($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection(limit: 5000) { events {
    __typename ... on MessageEvent { message level stepKey }
    ... on ErrorEvent { error { message cause { message } } } } } } } }"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2, help="daily partitions from 2026-01-01 (1..4)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (data, instance, log)")
    args = parser.parse_args()

    from emberharmony_assets.main import dagster_yaml
    from emberharmony_assets.testing import dagster_dev
    from emberharmony_core.demo import DemoConfig, write_demo_table

    demo = DemoConfig(entities=24, days=4, cadence_minutes=60, start="2026-01-01")
    days = [(date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(args.days)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_ui_backfill_"))
    data, home, log_path = tmp / "data", tmp / "home", tmp / "dagster_dev.log"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_yaml(str(home)).replace("enabled: true", "enabled: false"))
    write_demo_table(data / "demo.duckdb", demo)
    ok = False
    try:
        with dagster_dev(
            home,
            data,
            workspace=ROOT / "workspace.yaml",
            log=log_path,
            partitions=("2026-01-01", "2026-01-05"),
            backend="numpy",
        ) as server:
            ok = report(server, days)
        return 0 if ok else 1
    finally:
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)


# Complexity: launch the backfill, poll, report: one linear script.
def report(server: DagsterDev, days: list[str]) -> bool:  # noqa: C901
    """Launch the backfill of every asset over ``days``, wait for it, print its runs; True when it succeeded."""
    nodes = server.graphql("{ assetNodes { assetKey { path } isMaterializable } }")["assetNodes"]
    keys = [n["assetKey"]["path"] for n in nodes if n["isMaterializable"]]
    print(f"{len(keys)} assets: {', '.join('/'.join(k) for k in sorted(keys))}")
    print(f"partitions: {', '.join(days)}")
    params = {"assetSelection": [{"path": k} for k in keys], "partitionNames": days, "fromFailure": False}
    launched_at = time.time()
    launched = server.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launch failed: {launched}")
    backfill_id = launched["backfillId"]
    deadline = time.monotonic() + BACKFILL_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {server.process.returncode} during the backfill")
        backfill = server.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise RuntimeError(f"backfill lookup: {backfill}")
        if backfill["status"] in TERMINAL:
            observed_at = time.time()
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"backfill {backfill_id} not finished after {BACKFILL_S} s: {backfill['status']}")
        time.sleep(1)

    runs = server.graphql(RUNS, {"id": backfill_id})["runsOrError"]
    if runs["__typename"] != "Runs":
        raise RuntimeError(f"runs lookup: {runs}")
    runs = sorted(runs["results"], key=lambda r: r["startTime"] or r["creationTime"])
    rel = lambda t: f"{t - launched_at:7.1f}" if t else "      -"  # noqa: E731
    print(
        f"backfill {backfill_id}: {backfill['status']}"
        + (f" error: {backfill['error']['message']}" if backfill.get("error") else "")
    )
    print(f"runs: {len(runs)}   (times in s from launch)")
    total = 0.0
    for i, run in enumerate(runs, 1):
        tags = {t["key"]: t["value"] for t in run["tags"]}
        part = tags.get("dagster/partition") or (
            f"{tags.get('dagster/asset_partition_range_start')}..{tags.get('dagster/asset_partition_range_end')}"
            if "dagster/asset_partition_range_start" in tags
            else "-"
        )
        own = (run["endTime"] - run["startTime"]) if run["startTime"] and run["endTime"] else 0.0
        total += own
        assets = ",".join("/".join(a["path"]) for a in (run["assetSelection"] or []))
        print(
            f"  {i:2d} {run['status']:8s} start {rel(run['startTime'])} end {rel(run['endTime'])} "
            f"({own:5.1f} s)  [{part}]  {assets}"
        )
    for run in runs:
        if run["status"] != "SUCCESS":  # its ERROR events, short
            events = server.graphql(RUN_ERRORS, {"id": run["runId"]})["runOrError"]["eventConnection"]["events"]
            for event in events:
                if event.get("__typename") == "ExecutionStepFailureEvent" and event.get("error"):
                    error = event["error"]
                    message = ((error.get("cause") or {}).get("message") or error["message"]).strip()
                    print(f"     run {run['runId'][:8]} [{event.get('stepKey') or '-'}] {message[:400]}")
    end = backfill.get("endTimestamp")
    print(
        f"wall time launch -> completion: {observed_at - launched_at:.1f} s (observed by polling, 1 s)"
        + (f"; backfill's own endTimestamp - launch: {end - launched_at:.1f} s" if end else "")
    )
    print(f"sum of runs' execution times: {total:.1f} s")
    return backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS")


if __name__ == "__main__":
    sys.exit(main())
