"""A partition backfill through `dagster dev`, as a real client: GraphQL over HTTP, nothing imported from Dagster.

`dagster dev -w workspace.yaml` on a small demo table; `launchPartitionBackfill` of `full_refresh_job` over three
days; the daemon that `dagster dev` starts executes it as ONE run (single-run backfill policy); then, read back
through the API: each partition's own figures (first in its materialisation) against the files the run stored, the
run's totals after them, each named ``run_...``, and every asset check's result.

Why a job backfill (``selector`` + ``partitionNames``) and not a pure asset backfill (``assetSelection`` +
``partitionNames``, what the UI's *Materialize* of a selection sends): Dagster accepts the whole graph in one
asset backfill (unpartitioned ``preprocessor`` / ``pca_models`` included), but runs it in waves, one run per
partitions definition, the self-dependent ``window_carry`` with the windows after it: 6 runs, and the backfill
daemon advances one wave per 30 s tick (``DEFAULT_DAEMON_INTERVAL_SECONDS``, not configurable), so 3.5 minutes
(docs/scale.md; ``benchmarks/bench_ui_backfill.py``). The job backfill is one run over the range, the path the
main job takes. The run executes in process: five step processes cost ~12 s on a 2-core machine, which decides
whether the run ends before the daemon's next tick (the backfill is marked complete on a tick) or 30 s later.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

from emberharmony_assets.main import dagster_yaml
from emberharmony_assets.testing import DagsterDev, dagster_dev
from emberharmony_core.demo import DemoConfig, write_demo_table

ROOT = Path(__file__).resolve().parents[2]
DEMO = DemoConfig(entities=24, days=4, cadence_minutes=60, start="2026-01-01")
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
STRIDES = (1, 3, 5)
JOB = "full_refresh_job"
LOCATION = "emberharmony"  # workspace.yaml's location_name
BACKFILL_S = 180

METADATA = """metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } ... on TextMetadataEntry { text }
    ... on BoolMetadataEntry { boolValue } ... on MarkdownMetadataEntry { mdStr } }"""
LAUNCH = """mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message } ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
BACKFILL = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
    ... on PartitionBackfill { status error { message stack } runs { runId status jobName tags { key value } } }
    ... on PythonError { message } ... on BackfillNotFoundError { message } } }"""
RUN_ERRORS = """query ($id: ID!) { runOrError(runId: $id) { ... on Run { status eventConnection(limit: 5000) { events {
    __typename ... on MessageEvent { message level stepKey } ... on ErrorEvent { error { message stack } } } } } } }"""
# the queries' own braces make %-formatting the plain way to put METADATA in
ASSET_EVENTS = """query ($key: AssetKeyInput!, $days: [String!]) { assetOrError(assetKey: $key) { __typename
    ... on Asset { assetObservations(partitions: $days) { partition runId %s }
    assetMaterializations(partitions: $days) { partition runId %s } } } }""" % (METADATA, METADATA)  # noqa: UP031
CHECK_HISTORY = """query ($key: AssetKeyInput!, $name: String!) { assetCheckExecutions(assetKey: $key, checkName: $name,
    limit: 50) { runId status partition evaluation { success targetMaterialization { runId } } } }"""
CHECKS = (
    """{ assetNodes { assetKey { path } assetChecksOrError { __typename ... on AssetChecks { checks { name
    executionForLatestMaterialization { runId status evaluation { success %s } } } } } } }"""  # noqa: UP031
    % METADATA
)


def entries(event: dict) -> dict:
    """A metadata list as {label: value}, whatever the entry type."""
    out = {}
    for entry in event["metadataEntries"]:
        values = [v for k, v in entry.items() if k not in ("label", "__typename")]
        out[entry["label"]] = values[0] if values else None
    return out


def run_errors(server: DagsterDev, run_id: str) -> str:
    """The ERROR-level events of a run and their stack traces, for a failure message."""
    run = server.graphql(RUN_ERRORS, {"id": run_id})["runOrError"]
    lines = [f"run {run_id}: {run.get('status')}"]
    for event in (run.get("eventConnection") or {}).get("events", []):
        if event.get("level") in ("ERROR", "CRITICAL") or event.get("error"):
            lines.append(f"[{event.get('stepKey') or '-'}] {event['__typename']}: {event.get('message', '')}")
            if event.get("error"):
                lines.append(event["error"]["message"] + "".join((event["error"].get("stack") or [])[-6:]))
    return "\n".join(lines)


def wait_for_backfill(server: DagsterDev, backfill_id: str) -> dict:
    """Poll until the backfill is complete; fail at once with the run's errors when a run or the backfill fails."""
    deadline, backfill = time.monotonic() + BACKFILL_S, None
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"dagster dev exited with {server.process.returncode} during the backfill"
        backfill = server.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        failed = [r for r in backfill["runs"] if r["status"] in ("FAILURE", "CANCELED", "CANCELING")]
        if failed or backfill["status"] in ("FAILED", "FAILING", "COMPLETED_FAILED", "CANCELED", "CANCELING"):
            details = "\n".join(run_errors(server, r["runId"]) for r in (failed or backfill["runs"]))
            raise AssertionError(f"backfill {backfill_id} {backfill['status']}: {backfill['error']}\n{details}")
        if backfill["status"] in ("COMPLETED_SUCCESS", "COMPLETED"):
            return backfill
        time.sleep(1)
    runs = "\n".join(run_errors(server, r["runId"]) for r in (backfill or {}).get("runs", []))
    raise AssertionError(f"backfill {backfill_id} not complete after {BACKFILL_S} s: {backfill}\n{runs}")


def test_a_backfill_through_dagster_dev_records_each_partitions_own_figures_and_the_checks(tmp_path):  # noqa: C901
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    # the main job's instance settings (pooled SQLite storage), telemetry off: a throw-away instance
    (home / "dagster.yaml").write_text(dagster_yaml(str(home)).replace("enabled: true", "enabled: false"))
    assert write_demo_table(data / "demo.duckdb", DEMO) == DEMO.rows
    with dagster_dev(
        home,
        data,
        workspace=ROOT / "workspace.yaml",
        log=tmp_path / "dagster_dev.log",
        partitions=("2026-01-01", "2026-01-05"),
        backend="numpy",
    ) as server:
        selector = {
            "partitionSetName": f"{JOB}_partition_set",
            "repositorySelector": {"repositoryName": "__repository__", "repositoryLocationName": LOCATION},
        }
        launched = server.graphql(
            LAUNCH,
            {
                "params": {
                    "selector": selector,
                    "partitionNames": DAYS,
                    "title": "test_dagster_dev_backfill",
                    "runConfigData": {"execution": {"config": {"in_process": {}}}},
                }
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = wait_for_backfill(server, launched["backfillId"])

        # one run over the range (single-run backfill policy), the whole job, succeeded
        assert len(backfill["runs"]) == 1, backfill["runs"]
        run = backfill["runs"][0]
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert (run["status"], run["jobName"]) == ("SUCCESS", JOB)
        assert (tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")) == (
            DAYS[0],
            DAYS[-1],
        ), tags
        run_id, artifacts = run["runId"], data / "artifacts"

        def events(asset: str) -> tuple[dict, dict]:
            """(metadata of the latest materialisation per partition of the run's days, each one's labels in order)."""
            node = server.graphql(ASSET_EVENTS, {"key": {"path": [asset]}, "days": DAYS})["assetOrError"]
            assert node["__typename"] == "Asset", node
            assert node["assetObservations"] == [], (asset, node["assetObservations"])  # the figures: materialisations
            materialised: dict = {}
            labels: dict = {}
            for event in node["assetMaterializations"]:  # newest first
                assert event["runId"] == run_id, (asset, event)
                materialised.setdefault(event["partition"], entries(event))
                labels.setdefault(event["partition"], [e["label"] for e in event["metadataEntries"]])
            return materialised, labels

        def stored_rows(asset: str, day: str, stride: int | None = None) -> int:
            folder = artifacts / asset / (f"stride={stride}" if stride else "") / f"date={day}"
            return pq.read_metadata(folder / "part-0.parquet").num_rows

        # each partition of stride_windows leads with its own figures, equal to its stored index
        windows, labels = events("stride_windows")
        assert sorted(windows) == DAYS, windows
        for day in DAYS:
            assert labels[day][0] == "rows", labels[day]  # what the day's page shows first
            for stride in STRIDES:
                assert windows[day][f"windows_stride_{stride}"] == stored_rows("stride_windows", day, stride), (
                    day,
                    stride,
                )
            assert windows[day]["rows"] == stored_rows("features", day)
        # the first day has no carry (no window reaches back into a previous day): fewer windows than the others
        first, *later = (windows[day]["windows_stride_1"] for day in DAYS)
        assert all(first < n for n in later), [windows[d]["windows_stride_1"] for d in DAYS]
        # the run's figures follow, each named run_..., and are the sums
        for day in DAYS:
            assert windows[day]["run_partitions"] == f"3: {DAYS[0]} .. {DAYS[-1]}", windows[day]
            for stride in STRIDES:
                assert windows[day][f"run_windows_stride_{stride}"] == sum(
                    windows[d][f"windows_stride_{stride}"] for d in DAYS
                )

        # the projection's partitions have their own figures too: every window of the day projected
        projected, _ = events("projected_windows")
        assert sorted(projected) == DAYS
        for day in DAYS:
            for stride in STRIDES:
                assert projected[day][f"windows_stride_{stride}"] == stored_rows("projected_windows", day, stride)

        # every asset check of the graph ran in this run, on its latest materialisation, and passed
        results = {}
        for node in server.graphql(CHECKS)["assetNodes"]:
            checks = node["assetChecksOrError"]
            assert checks["__typename"] == "AssetChecks", (node["assetKey"], checks)
            for check in checks["checks"]:
                results[("/".join(node["assetKey"]["path"]), check["name"])] = check[
                    "executionForLatestMaterialization"
                ]
        assert {
            ("features", "no_missing_or_infinite_features"),
            ("stride_windows", "window_counts_match_rows"),
            ("split_data", "split_fractions_near_configured"),
            ("cyclical_features", "cyclical_features_finite_in_unit_range"),
            ("pca_models", "explained_variance_sane"),
        } <= set(results), sorted(results)
        for key, execution in results.items():
            assert execution is not None, f"check {key}: no execution for the latest materialisation"
            assert (execution["runId"], execution["status"]) == (run_id, "SUCCEEDED"), (key, execution)
            assert execution["evaluation"]["success"], (key, execution)
        # each check's history: on a partitioned asset, every day's own result pointing at that day's
        # materialisation of this run, plus the run's; nothing left planned (the UI's "Skipped")
        for asset, name in results:
            history = server.graphql(CHECK_HISTORY, {"key": {"path": [asset]}, "name": name})["assetCheckExecutions"]
            by_partition = {e["partition"]: e for e in history if e["runId"] == run_id}
            expected = {None, *DAYS} if asset != "pca_models" else {None}
            assert expected <= set(by_partition), (asset, name, history)
            for partition in expected:
                execution = by_partition[partition]
                assert execution["status"] == "SUCCEEDED", (asset, name, execution)
                assert execution["evaluation"]["targetMaterialization"]["runId"] == run_id, (asset, name, execution)
        counts = entries(results[("stride_windows", "window_counts_match_rows")]["evaluation"])
        assert counts["mismatched"] == "none"
        for stride in STRIDES:  # the check covers the whole range: the closed form equals every day's windows
            assert (
                counts[f"expected_stride_{stride}"]
                == counts[f"produced_stride_{stride}"]
                == sum(windows[d][f"windows_stride_{stride}"] for d in DAYS)
            )
        finite = entries(results[("features", "no_missing_or_infinite_features")]["evaluation"])
        assert finite["bad_values_by_column"] == "none"
        assert finite["rows_checked"] == sum(windows[d]["rows"] for d in DAYS)
