"""Bad settings and a bad source fail before any artifact is written, with an error naming the culprit;
a missing DuckDB file fails at once; a failed run leaves no DuckDB connection open."""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, materialize

from emberharmony_assets.assets import all_assets
from emberharmony_assets.definitions import DEMO_SETTINGS, DEMO_SOURCE
from emberharmony_assets.resources import DuckDBSourceResource, PipelineSettings
from tests.conftest import artifact_files, failure_text

from .conftest import PARTITIONS, make_resources

INGEST = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]


def run_fails(resources, selection=INGEST) -> str:
    with pytest.raises(Exception) as info:
        materialize(
            all_assets,
            resources=resources,
            partition_key=PARTITIONS[0],
            instance=DagsterInstance.ephemeral(),
            selection=selection,
        )
    return failure_text(info.value)


@pytest.fixture(scope="module")
def private_database(demo_database, tmp_path_factory) -> str:
    """A copy of the demo table in a file of its own (these tests open it read-write), plus a table whose
    timestamp and one feature are stored as text."""
    path = str(tmp_path_factory.mktemp("bad_settings") / "copy.duckdb")
    with duckdb.connect(path) as connection:
        connection.execute(f"ATTACH '{demo_database}' AS demo (READ_ONLY)")
        connection.execute("CREATE TABLE sensor_readings AS SELECT * FROM demo.sensor_readings")
        connection.execute(
            "CREATE TABLE text_readings AS SELECT * REPLACE (CAST(ts AS VARCHAR) AS ts, "
            "CAST(humidity AS VARCHAR) AS humidity) FROM demo.sensor_readings "
            "WHERE ts < TIMESTAMPTZ '2026-01-02 00:00:00+00'"
        )
        connection.execute("DETACH demo")
    return path


BAD = dict(
    drop_columns=["humidty"], target_column="load_next_hr", split_key="sensor", force_categorical_columns=["stauts"]
)
CULPRITS = [
    "no column 'humidty' (drop_columns); did you mean 'humidity'?",
    "no column 'load_next_hr' (target_column); did you mean 'load_next_hour'?",
    "no column 'sensor' (split_key); did you mean 'sensor_id'?",
    "no column 'stauts' (force_categorical_columns); did you mean 'status'?",
]


def test_validate_settings_names_every_bad_setting_at_once(private_database):
    source = DuckDBSourceResource(database=private_database, **DEMO_SOURCE)
    source.validate_settings(
        PipelineSettings(**DEMO_SETTINGS, split_key="sensor_id", drop_columns=["maintenance", "meta_rack"])
    )  # the demo fits
    with pytest.raises(ValueError) as info:
        source.validate_settings(PipelineSettings(**BAD))
    message = str(info.value)
    assert "(4 problems)" in message
    for culprit in CULPRITS:
        assert culprit in message, (culprit, message)


def test_validate_settings_runs_the_settings_own_checks(private_database):
    source = DuckDBSourceResource(database=private_database, **DEMO_SOURCE)
    with pytest.raises(ValueError, match="max_categories must be >= 1, got 0"):
        source.validate_settings(PipelineSettings(**DEMO_SETTINGS, max_categories=0))


def test_bad_settings_fail_before_anything_is_written(private_database, tmp_path):
    """Needs ``source.validate_settings(settings)`` at the top of the ``ingest`` body: without it a typo'd
    ``drop_columns`` is ignored and a typo'd ``force_categorical_columns`` fails after files were written."""
    resources = make_resources(private_database, str(tmp_path / "artifacts"), **BAD)
    message = run_fails(resources)
    for culprit in CULPRITS:
        assert culprit in message, (culprit, message)
    assert artifact_files(tmp_path / "artifacts") == []


def test_max_categories_zero_fails_before_any_work(private_database, tmp_path):
    resources = make_resources(private_database, str(tmp_path / "artifacts"), max_categories=0)
    assert "max_categories must be >= 1, got 0" in run_fails(resources)
    assert artifact_files(tmp_path / "artifacts") == []


def test_text_typed_columns_fail_before_any_work_naming_them(private_database, tmp_path):
    resources = make_resources(private_database, str(tmp_path / "artifacts"))
    resources["source"] = DuckDBSourceResource(database=private_database, **{**DEMO_SOURCE, "table": "text_readings"})
    message = run_fails(resources)
    assert "Binder Error" not in message
    assert "timestamp_column 'ts' is VARCHAR" in message and 'CAST("ts" AS TIMESTAMP)' in message
    assert "feature_columns 'humidity' is VARCHAR, not numeric" in message and 'CAST("humidity" AS DOUBLE)' in message
    assert artifact_files(tmp_path / "artifacts") == []


def test_a_missing_duckdb_file_fails_at_once_naming_the_path(tmp_path):
    typo = str(tmp_path / "dmeo.duckdb")
    resources = make_resources(typo, str(tmp_path / "artifacts"))
    started = time.perf_counter()
    message = run_fails(resources)
    assert time.perf_counter() - started < 20  # dagster-duckdb's connection retries took ~100 s
    assert re.search(re.escape(repr(typo)) + r".*does not exist", message) and "make demo" in message
    assert not Path(typo).exists() and not (tmp_path / "artifacts").exists()


def test_no_connection_is_left_open_after_a_failure(private_database):
    """A read-write connection in this process fails while any read-only one to the file is still open."""
    source = DuckDBSourceResource(database=private_database, **DEMO_SOURCE)
    with pytest.raises(ValueError) as failed_check:
        source.validate_settings(PipelineSettings(**BAD))
    with pytest.raises(RuntimeError) as failed_body, source.open_reader() as reader:
        reader.validate()
        raise RuntimeError("an asset failed while reading")
    # the errors (and their tracebacks, which hold the frames that held the connection) are still alive
    assert failed_check.value is not None and failed_body.value is not None
    with duckdb.connect(private_database) as connection:
        assert connection.execute("SELECT count(*) FROM sensor_readings").fetchone()[0] > 0


@pytest.mark.parametrize(
    "setting, culprit",
    [
        (dict(split_fractions=[0, 0.5, 0.5]), "split_fractions [0.0, 0.5, 0.5]: the train fraction is 0"),
    ],
)
def test_settings_that_leave_nothing_to_fit_fail_before_any_work(private_database, tmp_path, setting, culprit):
    """A split with no train share used to be accepted: every column was then dropped as null in 0 train rows and
    the windows pass crashed in Arrow, never saying 'train'."""
    message = run_fails(make_resources(private_database, str(tmp_path / "artifacts"), **setting))
    assert culprit in message, message
    assert artifact_files(tmp_path / "artifacts") == []


def test_an_unknown_struct_fields_policy_fails_when_given(private_database, tmp_path):
    """struct_fields is a choice list: a bad value given in Python fails at once, naming the setting and its values."""
    with pytest.raises(ValueError, match="struct_fields must be 'error' or 'union', got 'merge'"):
        make_resources(private_database, str(tmp_path / "artifacts"), struct_fields="merge")
    assert not (tmp_path / "artifacts").exists()
