"""A single run over a range records each partition's OWN figures first in that partition's materialisation
(what the day's page in the UI shows), the run's figures after them, each named ``run_...`` (real DuckDB file,
real Dagster instance)."""

from __future__ import annotations

import base64
import re
import struct

import pyarrow.parquet as pq
from dagster import DagsterInstance

from emberharmony_assets.testing import day_figures, figures_by_day, materialize_days

from .conftest import PARTITIONS, make_resources


def test_each_partition_of_a_range_run_has_its_own_figures(demo_database, tmp_path):
    artifacts = tmp_path / "artifacts"
    instance = DagsterInstance.ephemeral()
    first, last = PARTITIONS[0], PARTITIONS[3]
    result = materialize_days(first, last, resources=make_resources(demo_database, str(artifacts)), instance=instance)
    assert result.success
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]  # no second place to look
    days = PARTITIONS[:4]
    windows, projected = figures_by_day(instance, "stride_windows"), figures_by_day(instance, "projected_windows")
    ingested, split = figures_by_day(instance, "raw_chunk"), figures_by_day(instance, "split_data")
    stats = figures_by_day(instance, "preprocess_stats")
    assert sorted(windows) == sorted(projected) == sorted(ingested) == days
    for day in days:
        stored = pq.read_table(artifacts / "split_data" / f"date={day}" / "part-0.parquet")["split"].to_pylist()
        assert next(iter(ingested[day])) == "rows" and ingested[day]["rows"] == len(stored)
        assert split[day]["train"] == stored.count("train") and split[day]["test"] == stored.count("test")
        assert stats[day]["train_rows"] == stored.count("train")
    for day in days:
        assert next(iter(windows[day])) == "rows", list(windows[day])  # the day's page leads with the day's rows
        for stride in (1, 3, 5):
            stored = pq.read_metadata(
                artifacts / "stride_windows" / f"stride={stride}" / f"date={day}" / "part-0.parquet"
            ).num_rows
            assert windows[day][f"windows_stride_{stride}"] == stored  # this day's windows, not the run's
            assert projected[day][f"windows_stride_{stride}"] == stored
        assert (
            windows[day]["rows"] == pq.read_metadata(artifacts / "features" / f"date={day}" / "part-0.parquet").num_rows
        )
        assert "train_windows_stride_1" in figures_by_day(instance, "pca_stats")[day]
    # the first day has no carry, so fewer windows than a later day: the figures differ by partition
    assert windows[days[0]]["windows_stride_1"] < windows[days[1]]["windows_stride_1"]
    # the run's figures: after the day's, each named run_..., the same on every partition
    assert windows[days[1]]["run_partitions"] == f"4: {first} .. {last}"
    assert windows[days[1]]["run_windows_stride_1"] == sum(windows[d]["windows_stride_1"] for d in days)
    keys = list(windows[days[1]])
    own, run = keys[: keys.index("run_partitions")], keys[keys.index("run_partitions") :]
    assert own[0] == "rows" and {"windows_stride_1", "windows_stride_3", "windows_stride_5"} <= set(own), keys
    assert not set(own) & set(run), keys  # no run figure under a day's field name


def test_a_one_partition_run_keeps_its_figures_on_the_materialisation(demo_database, tmp_path):
    instance = DagsterInstance.ephemeral()
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    assert materialize_days(
        PARTITIONS[0],
        resources=resources,
        instance=instance,
        selection=["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"],
    ).success
    assert materialize_days(
        PARTITIONS[0],
        resources=resources,
        instance=instance,
        selection=["preprocessor", "features", "window_tails", "window_carry", "stride_windows", "pca_stats"],
    ).success
    metadata = figures_by_day(instance, "stride_windows")[PARTITIONS[0]]
    assert not any(k.startswith("run_") for k in metadata) and metadata["windows_stride_1"] > 0
    assert next(iter(metadata)) == "rows"


def test_pca_models_shows_a_scree_plot(demo_database, tmp_path):
    """The UI renders markdown images: the scree plot is an inline PNG with one curve per stride."""
    instance = DagsterInstance.ephemeral()
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    result = materialize_days(PARTITIONS[0], PARTITIONS[2], resources=resources, instance=instance)
    assert result.success
    markdown = day_figures(instance, "pca_models")["scree_plot"]
    encoded = re.fullmatch(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown).group(1)
    png = base64.b64decode(encoded)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (640, 320) and len(png) < 200_000
