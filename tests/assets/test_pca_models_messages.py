"""What ``pca_models`` says when it cannot fit (too few train windows) or fits beyond the numerical rank."""

from __future__ import annotations

import logging
import re

import pytest
from dagster import DagsterInstance, materialize

from emberharmony_assets.assets import all_assets
from emberharmony_assets.testing import day_figures, materialize_days

from .conftest import PARTITIONS, make_resources

UPSTREAM = [
    "raw_chunk",
    "split_data",
    "cyclical_features",
    "preprocess_stats",
    "preprocessor",
    "features",
    "window_tails",
    "window_carry",
    "stride_windows",
    "pca_stats",
]


def failure_text(result) -> str:
    return " ".join(
        e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.is_failure and getattr(e.event_specific_data, "error", None)
    )


def test_no_pca_stats_at_all_says_so(demo_database, tmp_path):
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    result = materialize(
        all_assets,
        selection=["pca_models"],
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    text = failure_text(result)
    assert "fewer than 2 train windows" in text
    assert "pca_stats files per stride: {1: 0, 3: 0, 5: 0}" in text
    assert "train windows per stride: {1: 0, 3: 0, 5: 0}" in text
    assert "has not been materialised for any partition" in text
    assert "older layout" not in text


def test_statistics_in_the_old_npz_layout_are_named_not_silently_ignored(demo_database, tmp_path):
    import numpy as np

    from emberharmony_core.features.pca import PCAStats
    from emberharmony_core.store import ArtifactStore

    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    old = PCAStats().update(np.random.default_rng(0).standard_normal((10, 4)))
    ArtifactStore(tmp_path / "artifacts").write_arrays(old.to_arrays(), "pca_stats", "stride=1", PARTITIONS[0])
    result = materialize(
        all_assets,
        selection=["pca_models"],
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    text = failure_text(result)
    assert not result.success and "has not been materialised for any partition" in text
    assert "pca_stats/stride=S/K.npz files there are an older layout, no longer read: re-materialise pca_stats" in text


def test_window_too_large_for_the_rows_says_why_with_the_numbers(demo_database, tmp_path):
    # 24 hourly rows per sensor and day; one day materialised, windows of 30 rows: no window can exist
    resources = make_resources(demo_database, str(tmp_path / "artifacts"), window_size=30)
    assert materialize_days(PARTITIONS[0], PARTITIONS[0], resources=resources, selection=UPSTREAM).success
    result = materialize_days(
        PARTITIONS[0], PARTITIONS[0], resources=resources, selection=["pca_models"], raise_on_error=False
    )
    assert not result.success
    text = failure_text(result)
    assert "stride(s) [1, 3, 5]: fewer than 2 train windows" in text
    assert "pca_stats files per stride: {1: 1, 3: 1, 5: 1}" in text
    assert "partitions with train windows per stride: {1: 0, 3: 0, 5: 0}" in text
    assert "train windows per stride: {1: 0, 3: 0, 5: 0}" in text
    assert "fewer than 30 rows each" in text and "window_size too large" in text and "train split" in text
    assert "materialise pca_stats for partitions whose rows include the train split" not in text  # the old message


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_n_components_above_the_numerical_rank_warns_and_the_check_passes(demo_database, tmp_path, dtype):
    # all window features as components: the sin/cos columns of consecutive hours make the windows rank-deficient
    resources = make_resources(
        demo_database, str(tmp_path / "artifacts"), n_components=10_000, strides=[1], dtype=dtype
    )
    assert materialize_days(PARTITIONS[0], PARTITIONS[1], resources=resources, selection=UPSTREAM).success
    instance = DagsterInstance.ephemeral()
    result = materialize_days(
        PARTITIONS[0], PARTITIONS[1], resources=resources, selection=["pca_models"], instance=instance
    )
    [check] = result.get_asset_check_evaluations()
    assert check.passed, check.metadata["problems"]
    assert check.metadata["dtype"].value == dtype  # the settings dtype reaches the check
    rank = check.metadata["numerical_rank_stride_1"].value
    metadata = day_figures(result, "pca_models")
    warning = metadata["rank_warning_stride_1"]
    components = int(re.search(r"n_components (\d+) exceeds", warning).group(1))
    assert 0 < rank < components
    assert f"exceeds the numerical rank {rank} " in warning
    assert check.metadata["components_beyond_rank_stride_1"].value == components - rank
    warnings = [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING]
    assert any(f"exceeds the numerical rank {rank} " in m for m in warnings), warnings
