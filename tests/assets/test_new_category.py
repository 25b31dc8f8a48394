"""A category that first appears after the preprocessor was fitted is encoded with the FITTED vocabulary (an
unseen value: all of that column's one-hot features are 0), so later days window and project like any other
day; refitting the preprocessor on a vocabulary of another size fails the windows pass naming what to redo,
instead of mixing widths (real DuckDB file, real Dagster)."""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pytest

from emberharmony_assets.testing import materialize_days
from emberharmony_core.store import ArtifactStore
from tests.conftest import failure_text

from .conftest import PARTITIONS, make_resources

INGEST = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]
WINDOWS = ["features", "window_tails", "window_carry", "stride_windows", "pca_stats"]


@pytest.fixture
def database(demo_database, tmp_path) -> str:
    """The small demo, where every sensor of site 'north' reports status 'brand-new' from the third day on."""
    path = str(tmp_path / "new_category.duckdb")
    with duckdb.connect(path) as connection:
        connection.execute(f"ATTACH '{demo_database}' AS demo (READ_ONLY)")
        connection.execute("CREATE TABLE sensor_readings AS SELECT * FROM demo.sensor_readings")
        connection.execute(
            f"UPDATE sensor_readings SET status = 'brand-new' WHERE ts >= TIMESTAMPTZ '{PARTITIONS[2]} 00:00:00+00'"
            " AND site = (SELECT min(site) FROM sensor_readings)"
        )
    return path


def test_a_category_new_after_the_fit_is_encoded_by_the_fitted_vocabulary(database, tmp_path):
    artifacts = tmp_path / "artifacts"
    resources = make_resources(database, str(artifacts))
    assert materialize_days(PARTITIONS[0], PARTITIONS[1], resources=resources, selection=INGEST).success
    # vocabulary of days 1-2
    assert materialize_days(PARTITIONS[0], PARTITIONS[0], resources=resources, selection=["preprocessor"]).success
    # 'brand-new' arrives on day 3
    assert materialize_days(PARTITIONS[2], PARTITIONS[3], resources=resources, selection=INGEST).success
    result = materialize_days(
        PARTITIONS[0], PARTITIONS[3], resources=resources, selection=WINDOWS + ["pca_models", "projected_windows"]
    )
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())

    store = ArtifactStore(artifacts)
    day3 = store.read_frame("features", PARTITIONS[2])
    status = [c for c in day3.columns if c.startswith("status_")]
    assert status and not any("brand-new" in c for c in status)  # the fitted vocabulary, not the new value
    raw = store.read_frame("raw_chunk", PARTITIONS[2])
    new = (raw["status"] == "brand-new").to_numpy()
    assert new.any() and not new.all()
    assert (day3.loc[new, status].to_numpy() == 0).all()  # unseen: all zero
    assert (day3.loc[~new, status].to_numpy().sum(axis=1) == 1).all()
    features = store.read_json("stride_windows", "layout")["feature_columns"]
    assert np.isfinite(day3[features].to_numpy()).all()
    for stride in (1, 3, 5):
        projected = store.read_frame("projected_windows", PARTITIONS[2], f"stride={stride}")
        assert len(projected) and np.isfinite(projected.filter(like="pc_").to_numpy()).all()

    # refit on all four days: the vocabulary grows by one, so every day's features (and the windows' carry)
    # must be redone; windowing day 3 alone on top of day 2's old carry fails, naming the fix
    assert materialize_days(PARTITIONS[0], PARTITIONS[0], resources=resources, selection=["preprocessor"]).success
    with pytest.raises(Exception) as failed:
        materialize_days(PARTITIONS[2], PARTITIONS[2], resources=resources, selection=WINDOWS)
    message = failure_text(failed.value)
    assert f"window_tails of partition {PARTITIONS[2]}" in message and "status_brand-new" in message  # day, column
    # the message's command repairs it: its selection over its range in one run, then the models and projections
    command = re.search(
        r"dagster asset materialize -m emberharmony_assets.definitions --select (\S+) "
        r"--partition-range (\S+)\.\.\.(\S+)",
        message,
    )
    assert command, message
    selection, first, last = command.group(1).split(","), command.group(2), command.group(3)
    assert (first, last) == (PARTITIONS[0], PARTITIONS[3])
    assert materialize_days(first, last, resources=resources, selection=selection).success
    assert materialize_days(first, last, resources=resources, selection=["pca_models", "projected_windows"]).success
    width = len(store.read_json("stride_windows", "layout")["feature_columns"])
    assert width == len(features) + 1  # one more one-hot column: status_brand-new
    for day in PARTITIONS[:4]:
        assert "status_brand-new" in store.read_frame("features", day).columns
        for stride in (1, 3, 5):
            assert len(store.read_frame("projected_windows", day, f"stride={stride}"))
