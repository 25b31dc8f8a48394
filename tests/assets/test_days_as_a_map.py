"""Days are a map: every pass over a day's rows runs for any day, in any order, in separate runs and in
separate processes at once; only window_carry (a fold of per-entity summaries) goes day after day. Whatever
the order and grouping, every artifact is byte-identical to one run over the range (real DuckDB file, real
Dagster runs), on a table with sparse entities whose windows reach back several days, and empty days."""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emberharmony_assets.testing import materialize_days

from .conftest import PARTITIONS, make_resources

INGEST = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]
DAY_PASSES = [["features", "window_tails"], ["stride_windows", "pca_stats"]]


def digests(base: Path) -> dict[str, str]:
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
    }


@pytest.fixture(scope="module")
def sparse_database(demo_database, tmp_path_factory) -> str:
    """The small demo (24 sensors, hourly, 5 days) made sparse: the third day empty, sensors ending in 1 report
    once a day (windows of 5 reach back 5 days), sensors ending in 2 only on the first and last days."""
    path = str(tmp_path_factory.mktemp("sparse") / "sparse.duckdb")
    with duckdb.connect(path) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute(f"ATTACH '{demo_database}' AS demo (READ_ONLY)")
        connection.execute("CREATE TABLE sensor_readings AS SELECT * FROM demo.sensor_readings")
        connection.execute(
            f"DELETE FROM sensor_readings WHERE ts >= TIMESTAMPTZ '{PARTITIONS[2]} 00:00:00+00' "
            f"AND ts < TIMESTAMPTZ '{PARTITIONS[3]} 00:00:00+00'"
        )
        connection.execute("DELETE FROM sensor_readings WHERE sensor_id LIKE '%1' AND hour(ts) <> 12")
        connection.execute(
            f"DELETE FROM sensor_readings WHERE sensor_id LIKE '%2' AND ts >= TIMESTAMPTZ "
            f"'{PARTITIONS[1]} 00:00:00+00' AND ts < TIMESTAMPTZ '{PARTITIONS[4]} 00:00:00+00'"
        )
    return path


@pytest.fixture(scope="module")
def one_run(sparse_database, tmp_path_factory) -> dict[str, str]:
    """Every artifact of one run over the range."""
    base = tmp_path_factory.mktemp("one_run") / "artifacts"
    assert materialize_days(PARTITIONS[0], PARTITIONS[-1], resources=make_resources(sparse_database, str(base))).success
    found = digests(base)
    assert any(name.startswith("window_carry/") for name in found) and any("projected_windows/" in n for n in found)
    return found


def test_days_materialised_one_by_one_in_random_order_give_the_same_bytes(sparse_database, one_run, tmp_path):
    base = tmp_path / "artifacts"
    resources = make_resources(sparse_database, str(base))
    order = random.Random(7).sample(PARTITIONS, len(PARTITIONS))
    for day in order:
        assert materialize_days(day, day, resources=resources, selection=INGEST).success
    assert materialize_days(PARTITIONS[0], PARTITIONS[0], resources=resources, selection=["preprocessor"]).success
    for day in order:
        assert materialize_days(day, day, resources=resources, selection=DAY_PASSES[0]).success
    # the one chain: light, one run
    assert materialize_days(PARTITIONS[0], PARTITIONS[-1], resources=resources, selection=["window_carry"]).success
    for day in reversed(order):
        assert materialize_days(day, day, resources=resources, selection=DAY_PASSES[1]).success
    assert materialize_days(PARTITIONS[0], PARTITIONS[0], resources=resources, selection=["pca_models"]).success
    for day in order:
        assert materialize_days(day, day, resources=resources, selection=["projected_windows"]).success
    assert digests(base) == one_run


def _days_in_a_process(database: str, base: str, selection: list[str], days: list[str]) -> None:
    resources = make_resources(database, base)
    for day in days:
        assert materialize_days(day, day, resources=resources, selection=selection).success


def test_days_in_separate_processes_at_once_give_the_same_bytes(sparse_database, one_run, tmp_path):
    """Two worker processes take alternate days of every pass over rows at the same time (the run queue's
    picture, without a daemon); the global fits and the carry fold run once between them."""
    base = str(tmp_path / "artifacts")
    resources = make_resources(sparse_database, base)
    halves = [PARTITIONS[0::2], PARTITIONS[1::2]]

    def in_parallel(selection):
        with ProcessPoolExecutor(2) as pool:
            for done in [pool.submit(_days_in_a_process, sparse_database, base, selection, days) for days in halves]:
                done.result()

    in_parallel(INGEST)
    assert materialize_days(PARTITIONS[0], PARTITIONS[0], resources=resources, selection=["preprocessor"]).success
    in_parallel(DAY_PASSES[0])
    assert materialize_days(PARTITIONS[0], PARTITIONS[-1], resources=resources, selection=["window_carry"]).success
    in_parallel(DAY_PASSES[1])
    assert materialize_days(PARTITIONS[0], PARTITIONS[0], resources=resources, selection=["pca_models"]).success
    in_parallel(["projected_windows"])
    assert digests(Path(base)) == one_run


def test_the_windows_of_a_day_wait_for_the_carry_of_the_day_before_and_say_how_to_make_it(sparse_database, tmp_path):
    resources = make_resources(sparse_database, str(tmp_path / "artifacts"))
    assert materialize_days(PARTITIONS[0], PARTITIONS[-1], resources=resources, selection=INGEST).success
    assert materialize_days(
        PARTITIONS[0], PARTITIONS[-1], resources=resources, selection=["preprocessor"] + DAY_PASSES[0]
    ).success
    result = materialize_days(PARTITIONS[3], resources=resources, selection=DAY_PASSES[1], raise_on_error=False)
    assert not result.success
    text = " ".join(e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure)
    assert (
        f"partition {PARTITIONS[3]} (stride_windows) continues each entity's series from partition {PARTITIONS[2]}, "
        f"but the window_carry of {PARTITIONS[2]} is missing" in text
    )
    assert (f"--select window_carry --partition-range {PARTITIONS[0]}...{PARTITIONS[2]}") in text
    # as the message says
    assert materialize_days(PARTITIONS[0], PARTITIONS[2], resources=resources, selection=["window_carry"]).success
    assert materialize_days(PARTITIONS[3], PARTITIONS[3], resources=resources, selection=DAY_PASSES[1]).success


def test_a_new_window_size_names_the_carries_to_redo_and_the_command_redoes_them(sparse_database, tmp_path):
    base = str(tmp_path / "artifacts")
    assert materialize_days(PARTITIONS[0], PARTITIONS[2], resources=make_resources(sparse_database, base)).success
    smaller = make_resources(sparse_database, base, window_size=3)
    result = materialize_days(PARTITIONS[2], resources=smaller, selection=DAY_PASSES[1], raise_on_error=False)
    text = " ".join(e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure)
    assert f"the window_carry of {PARTITIONS[1]} was made with window_size 5, the settings say 3" in text, text
    command = f"--select features,window_tails,window_carry --partition-range {PARTITIONS[0]}...{PARTITIONS[2]}"
    assert command in text, text
    assert materialize_days(
        PARTITIONS[0], PARTITIONS[2], resources=smaller, selection=["features", "window_tails", "window_carry"]
    ).success  # as it says
    assert materialize_days(PARTITIONS[2], PARTITIONS[2], resources=smaller, selection=DAY_PASSES[1]).success


def test_scale_out_cuts_a_range_into_contiguous_runs_and_tags_each_as_dagster_reads_it():
    from emberharmony_assets.scale_out import day_groups, range_tags

    assert day_groups(PARTITIONS, 2) == [(PARTITIONS[0], PARTITIONS[2]), (PARTITIONS[3], PARTITIONS[4])]
    assert day_groups(PARTITIONS, 99) == [(day, day) for day in PARTITIONS]  # at most one run per day
    assert day_groups(PARTITIONS, 0) == [(PARTITIONS[0], PARTITIONS[4])]
    assert range_tags(PARTITIONS[1], PARTITIONS[1]) == {"dagster/partition": PARTITIONS[1]}
    assert range_tags(PARTITIONS[0], PARTITIONS[2]) == {
        ASSET_PARTITION_RANGE_START_TAG: PARTITIONS[0],
        ASSET_PARTITION_RANGE_END_TAG: PARTITIONS[2],
    }
