"""``make bench-graph``: the floor graph follows any asset graph; the pandas + scikit-learn script makes the job's
windows; all four methods run end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

import duckdb
import numpy as np
import pandas as pd
from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    MaterializeResult,
    TimeWindowPartitionMapping,
    asset,
    multi_asset,
)

from benchmarks import bench_graph as bench
from benchmarks import script_pipeline
from emberharmony_assets import testing
from emberharmony_core.features.windows import window_count, window_end_rows

ROOT = Path(__file__).resolve().parents[2]

DAYS = DailyPartitionsDefinition(start_date="2026-02-01", end_date="2026-02-04", timezone="UTC")  # 3 partitions


class SingleRun(TypedDict):
    """The keyword arguments of a daily asset backfilled in one run (typed, for ``@asset(**SINGLE)``)."""

    partitions_def: DailyPartitionsDefinition
    backfill_policy: BackfillPolicy


SINGLE: SingleRun = {"partitions_def": DAYS, "backfill_policy": BackfillPolicy.single_run()}


def _toy_defs() -> Definitions:
    """A graph with no name in common with ours: a partitioned asset, a subsettable multi-asset whose
    outputs depend on each other (not in name order), on their own previous partition and on the
    previous partition upstream, with a check; an unpartitioned asset; an external (non-materialisable) spec."""
    previous = TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)

    @asset(**SINGLE, group_name="toy", deps=["outside"])
    def alpha():
        return MaterializeResult()

    @multi_asset(
        **SINGLE,
        can_subset=True,
        name="pair",
        specs=[
            AssetSpec(
                "zeta",
                group_name="toy",
                skippable=True,
                deps=[
                    AssetDep(alpha, partition_mapping=TimeWindowPartitionMapping(start_offset=-1)),
                    AssetDep("zeta", partition_mapping=previous),
                ],
            ),
            AssetSpec("eta", group_name="toy", skippable=True, deps=["zeta", alpha]),
        ],
        check_specs=[AssetCheckSpec("zeta_ok", asset="zeta")],
    )
    def pair(context):
        raise AssertionError("the floor never runs the real bodies")

    @asset(deps=["zeta"], group_name="models", check_specs=[AssetCheckSpec("delta_ok", asset="delta")])
    def delta():
        raise AssertionError("the floor never runs the real bodies")

    return Definitions(assets=[AssetSpec("outside"), alpha, pair, delta])


def test_floor_copies_the_graphs_specs_checks_and_grouping():
    defs = _toy_defs()
    floor = bench.floor_assets(defs)
    real = {a.node_def.name: a for a in defs.assets if hasattr(a, "node_def")}
    assert sorted(a.node_def.name for a in floor) == sorted(real)  # the external spec is not materialised
    for noop in floor:
        original = real[noop.node_def.name]
        assert noop.keys == original.keys and noop.check_keys == original.check_keys
        assert noop.can_subset == original.can_subset and noop.backfill_policy == original.backfill_policy
        assert noop.partitions_def == original.partitions_def
        for key in original.keys:
            assert noop.specs_by_key[key].deps == original.specs_by_key[key].deps  # partition mappings too
            assert noop.specs_by_key[key].group_name == original.specs_by_key[key].group_name
    assert bench.graph_partition_keys(floor) == ["2026-02-01", "2026-02-02", "2026-02-03"]


def test_floor_materialises_every_asset_partition_and_passes_every_check_in_one_run():
    floor = bench.floor_assets(_toy_defs())
    with DagsterInstance.ephemeral() as instance:
        result = testing.materialize_days("2026-02-01", "2026-02-03", resources={}, instance=instance, assets=floor)
        assert result.success
        materialised = [
            (e.asset_key.to_user_string(), e.partition)
            for e in (ev.event_specific_data.materialization for ev in result.get_asset_materialization_events())
        ]
        assert sorted(materialised) == sorted(
            [(k, p) for k in ("alpha", "zeta", "eta") for p in ("2026-02-01", "2026-02-02", "2026-02-03")]
            + [("delta", None)]
        )
        assert sorted(e.check_name for e in result.get_asset_check_evaluations() if e.passed) == ["delta_ok", "zeta_ok"]
        # as the real graph: each partition's own metadata on its materialisation, no observation
        assert not [ev for ev in result.all_events if ev.event_type_value == "ASSET_OBSERVATION"]
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            assert materialization.metadata["rows"].value == 0
            assert ("partitions" in materialization.metadata) == (materialization.partition is not None)
        # a subset of the multi-asset: only what is selected is reported
        subset = testing.materialize_days(
            "2026-02-02", resources={}, instance=instance, selection=["eta"], assets=floor
        )
        assert subset.success
        assert [e.asset_key for e in subset.get_asset_materialization_events()] == [AssetKey("eta")]


def test_floor_of_the_real_graph_has_the_same_keys_and_checks():
    from emberharmony_assets.definitions import defs

    floor = bench.floor_assets(defs)
    real = [a for a in defs.assets if getattr(a, "is_materializable", False)]
    assert set().union(*(a.keys for a in floor)) == set().union(*(a.keys for a in real))
    assert set().union(*(a.check_keys for a in floor)) == set().union(*(a.check_keys for a in real))


def test_script_makes_the_jobs_windows_and_projects_every_one(demo_database, tmp_path):
    """The script does the main job's work: per stride, every window of the job's rule (each entity's rows 0, s,
    2s, ... of its series, never across entities), none mixing splits, each projected on n_components."""
    settings = script_pipeline.demo_settings()
    w, k = settings["window"], settings["components"]
    result = script_pipeline.run_script(demo_database, str(tmp_path), **settings)
    with duckdb.connect(demo_database, read_only=True) as connection:
        table = connection.execute("SELECT sensor_id, ts FROM sensor_readings ORDER BY sensor_id, ts").df()
    series = {entity: times.to_numpy() for entity, times in table.groupby("sensor_id", sort=True)["ts"]}
    assert len(series) == 24 and result["rows"] == len(table) == 24 * 5 * 24
    for stride in settings["strides"]:
        out = pd.read_parquet(tmp_path / f"stride={stride}" / "part-0.parquet")
        assert list(out.columns) == ["entity", "end_time", "split", *[f"pc_{i + 1}" for i in range(k)]]
        expected = [
            (entity, end) for entity, times in series.items() for end in times[window_end_rows(len(times), w, stride)]
        ]
        assert (
            len(out)
            == result["windows"][stride]
            == len(expected)
            == sum(window_count(len(t), w, stride) for t in series.values())
        )
        assert list(zip(out["entity"], out["end_time"].to_numpy(), strict=True)) == expected
        assert result["mixed_split_dropped"][stride] == 0 and out.groupby("entity")["split"].nunique().max() == 1
        assert set(out["split"]) <= {"train", "validation", "test"}
        assert result["train_windows"][stride] == int((out["split"] == "train").sum()) > k
        assert out[[f"pc_{i + 1}" for i in range(k)]].dtypes.eq(settings["dtype"]).all()
        assert np.isfinite(out.iloc[:, 3:].to_numpy()).all()


def test_script_drops_windows_that_mix_splits():
    entity = np.array([0] * 7 + [1] * 3)
    splits = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2], dtype=np.int8)  # entity 0 changes split at its row 3
    starts, mixed = script_pipeline.window_starts(entity, splits, 3, 1)
    assert starts.tolist() == [0, 3, 4, 7] and mixed == 2  # 1 and 2 mix; 5.. would cross into entity 1
    starts, mixed = script_pipeline.window_starts(entity, splits, 3, 2)
    assert starts.tolist() == [0, 4, 7] and mixed == 1


ROW = re.compile(r"^(seed|script|floor|main)\s+([0-9.]+)\s+([0-9,]+)\s+([0-9,]+)\s+\S+\s+\S+\s+\S+\s+(\S+)\s*$", re.M)


def test_bench_graph_runs_seed_script_floor_and_main_and_prints_the_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBERHARMONY_", "DAGSTER_HOME"))}
    env["EMBERHARMONY_BACKEND"] = "numpy"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_graph",
            "--entities",
            "4",
            "--days",
            "3",
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "4 entities x 3 days = 576 rows" in done.stdout
    rows = {m.group(1): m for m in ROW.finditer(done.stdout)}
    assert sorted(rows) == ["floor", "main", "script", "seed"], done.stdout
    for _method, row in rows.items():
        assert float(row.group(2)) > 0 and row.group(5) == "ok", row.group(0)
        assert 0 < int(row.group(4).replace(",", "")) < 16_000  # peak RSS, MiB
    assert re.search(r"seed/main \(speed-up\): [0-9.]+x wall", done.stdout)
    assert re.search(r"main/floor: [0-9.]+x wall", done.stdout)
    assert re.search(r"script/main \(speed-up\): [0-9.]+x wall, [0-9.]+x in-run", done.stdout)
    assert re.search(r"equal work: windows per stride, script \{.*\}, main \{.*\}: the same", done.stdout), done.stdout
    assert re.search(r"main artifacts: [0-9,]+ MiB = [0-9.]+x the DuckDB file", done.stdout)
    assert re.search(r"floor cost: [0-9,]+ events .* ms/event, [0-9.]+ ms/materialisation", done.stdout)
    # each method ran in its own fresh folder on its own copy of the table
    work = tmp_path / "work" / "custom"
    assert (work / "script-1" / "demo.duckdb").is_file() and (work / "script-1" / "projections" / "stride=1").is_dir()
    assert (work / "seed-1" / "demo.duckdb").is_file() and (work / "main-1" / "home" / "demo.duckdb").is_file()
    assert (work / "floor-1" / "home" / "dagster_home").is_dir()
