"""A single run over a range records each partition's OWN figures (an observation per step and partition),
while the materialisations' metadata, which Dagster copies to every partition of the range, says it is the
run's (real DuckDB file, real Dagster instance)."""

from __future__ import annotations

import base64
import re
import struct

import pyarrow.parquet as pq
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emberharmony_assets.assets import all_assets

from .conftest import PARTITIONS, make_resources


def observations(instance, asset: str) -> dict[str, dict]:
    records = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_OBSERVATION, asset_key=AssetKey(asset)))
    out = {}
    for record in records:
        observation = record.event_log_entry.dagster_event.event_specific_data.asset_observation
        out[observation.partition] = {k: getattr(v, "value", v) for k, v in observation.metadata.items()}
    return out


def latest_materialization_metadata(instance, asset: str, partition: str) -> dict:
    records = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey(asset),
                                                            asset_partitions=[partition]), limit=1)
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def test_each_partition_of_a_range_run_has_its_own_figures(demo_database, tmp_path):
    artifacts = tmp_path / "artifacts"
    instance = DagsterInstance.ephemeral()
    first, last = PARTITIONS[0], PARTITIONS[3]
    result = materialize(all_assets, resources=make_resources(demo_database, str(artifacts)), instance=instance,
                         tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
    assert result.success
    days = PARTITIONS[:4]
    windows = observations(instance, "stride_windows")
    projected = observations(instance, "projected_windows")
    ingested = observations(instance, "raw_chunk")
    assert sorted(windows) == sorted(projected) == sorted(ingested) == days
    for day in days:
        stored = pq.read_table(artifacts / "split_data" / f"date={day}" / "part-0.parquet")["split"].to_pylist()
        assert ingested[day]["rows"] == len(stored)
        assert ingested[day]["train"] == stored.count("train") and ingested[day]["test"] == stored.count("test")
        assert ingested[day]["train_rows"] == stored.count("train")  # preprocess_stats' own figure
    for day in days:
        for stride in (1, 3, 5):
            stored = pq.read_metadata(artifacts / "stride_windows" / f"stride={stride}" / f"date={day}" / "part-0.parquet").num_rows
            assert windows[day][f"windows_stride_{stride}"] == stored  # this day's windows, not the run's
            assert projected[day][f"windows_stride_{stride}"] == stored
        assert windows[day]["rows"] == pq.read_metadata(artifacts / "features" / f"date={day}" / "part-0.parquet").num_rows
        assert "train_windows_stride_1" in windows[day]
    # the first day has no carry, so fewer windows than a later day: the figures differ by partition
    assert windows[days[0]]["windows_stride_1"] < windows[days[1]]["windows_stride_1"]
    run_level = latest_materialization_metadata(instance, "stride_windows", days[1])
    assert run_level["scope"].startswith(f"run totals over 4 partitions {first} .. {last}")
    assert run_level["windows_stride_1"] == sum(windows[d]["windows_stride_1"] for d in days)


def test_a_one_partition_run_keeps_its_figures_on_the_materialisation(demo_database, tmp_path):
    instance = DagsterInstance.ephemeral()
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    assert materialize(all_assets, resources=resources, instance=instance, partition_key=PARTITIONS[0],
                       selection=["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]).success
    assert materialize(all_assets, resources=resources, instance=instance, partition_key=PARTITIONS[0],
                       selection=["preprocessor", "features", "window_tails", "window_carry", "stride_windows", "pca_stats"]).success
    assert observations(instance, "stride_windows") == {}
    metadata = latest_materialization_metadata(instance, "stride_windows", PARTITIONS[0])
    assert "scope" not in metadata and metadata["windows_stride_1"] > 0


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
