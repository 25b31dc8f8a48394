"""A single run over a range records each partition's OWN figures first in that partition's materialisation
(what the day's page in the UI shows), the run's figures after them, each named ``run_...`` (real DuckDB file,
real Dagster instance)."""

from __future__ import annotations

import base64
import re
import struct

import pyarrow.parquet as pq
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emberharmony_assets.assets import all_assets

from .conftest import PARTITIONS, make_resources


def figures(instance, asset: str) -> dict[str, dict]:
    """The latest materialisation's metadata of every partition of ``asset``, in its order."""
    records = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey(asset)))
    out = {}
    for record in records:  # newest first
        materialization = record.asset_materialization
        out.setdefault(materialization.partition, {k: getattr(v, "value", v) for k, v in materialization.metadata.items()})
    return out


def test_each_partition_of_a_range_run_has_its_own_figures(demo_database, tmp_path):
    artifacts = tmp_path / "artifacts"
    instance = DagsterInstance.ephemeral()
    first, last = PARTITIONS[0], PARTITIONS[3]
    result = materialize(all_assets, resources=make_resources(demo_database, str(artifacts)), instance=instance,
                         tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
    assert result.success
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]  # no second place to look
    days = PARTITIONS[:4]
    windows, projected = figures(instance, "stride_windows"), figures(instance, "projected_windows")
    ingested, split = figures(instance, "raw_chunk"), figures(instance, "split_data")
    stats = figures(instance, "preprocess_stats")
    assert sorted(windows) == sorted(projected) == sorted(ingested) == days
    for day in days:
        stored = pq.read_table(artifacts / "split_data" / f"date={day}" / "part-0.parquet")["split"].to_pylist()
        assert next(iter(ingested[day])) == "rows" and ingested[day]["rows"] == len(stored)
        assert split[day]["train"] == stored.count("train") and split[day]["test"] == stored.count("test")
        assert stats[day]["train_rows"] == stored.count("train")
    for day in days:
        assert next(iter(windows[day])) == "rows", list(windows[day])  # the day's page leads with the day's rows
        for stride in (1, 3, 5):
            stored = pq.read_metadata(artifacts / "stride_windows" / f"stride={stride}" / f"date={day}" / "part-0.parquet").num_rows
            assert windows[day][f"windows_stride_{stride}"] == stored  # this day's windows, not the run's
            assert projected[day][f"windows_stride_{stride}"] == stored
        assert windows[day]["rows"] == pq.read_metadata(artifacts / "features" / f"date={day}" / "part-0.parquet").num_rows
        assert "train_windows_stride_1" in figures(instance, "pca_stats")[day]
    # the first day has no carry, so fewer windows than a later day: the figures differ by partition
    assert windows[days[0]]["windows_stride_1"] < windows[days[1]]["windows_stride_1"]
    # the run's figures: after the day's, each named run_..., the same on every partition
    assert windows[days[1]]["run_partitions"] == f"4: {first} .. {last}"
    assert windows[days[1]]["run_windows_stride_1"] == sum(windows[d]["windows_stride_1"] for d in days)
    keys = list(windows[days[1]])
    own, run = keys[:keys.index("run_partitions")], keys[keys.index("run_partitions"):]
    assert own[0] == "rows" and {"windows_stride_1", "windows_stride_3", "windows_stride_5"} <= set(own), keys
    assert not set(own) & set(run), keys  # no run figure under a day's field name


def test_a_one_partition_run_keeps_its_figures_on_the_materialisation(demo_database, tmp_path):
    instance = DagsterInstance.ephemeral()
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    assert materialize(all_assets, resources=resources, instance=instance, partition_key=PARTITIONS[0],
                       selection=["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]).success
    assert materialize(all_assets, resources=resources, instance=instance, partition_key=PARTITIONS[0],
                       selection=["preprocessor", "features", "window_tails", "window_carry", "stride_windows", "pca_stats"]).success
    metadata = figures(instance, "stride_windows")[PARTITIONS[0]]
    assert not any(k.startswith("run_") for k in metadata) and metadata["windows_stride_1"] > 0
    assert next(iter(metadata)) == "rows"


def test_pca_models_shows_a_scree_plot(demo_database, tmp_path):
    """The UI renders markdown images: the scree plot is an inline PNG with one curve per stride."""
    instance = DagsterInstance.ephemeral()
    result = materialize(all_assets, resources=make_resources(demo_database, str(tmp_path / "artifacts")), instance=instance,
                         tags={ASSET_PARTITION_RANGE_START_TAG: PARTITIONS[0], ASSET_PARTITION_RANGE_END_TAG: PARTITIONS[2]})
    assert result.success
    records = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey("pca_models")))
    markdown = records[0].asset_materialization.metadata["scree_plot"].value
    encoded = re.fullmatch(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown).group(1)
    png = base64.b64decode(encoded)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (640, 320) and len(png) < 200_000
