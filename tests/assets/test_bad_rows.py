"""Bad rows in the source (duplicate (entity, ts) keys, NULL entity ids, +-inf / overflowing feature values) fail
the ingest pass naming the partition and the culprit, before anything of that partition is written;
``settings.on_duplicate`` merges duplicates instead, counted in raw_chunk's metadata."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from emberharmony_assets.definitions import DEMO_SOURCE
from emberharmony_assets.resources import DuckDBSourceResource
from emberharmony_assets.testing import day_figures, materialize_days
from emberharmony_core.store import ArtifactStore
from tests.conftest import failure_text

from .conftest import make_resources

INGEST = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]
DAY = "2026-01-02"
AT = "TIMESTAMPTZ '2026-01-02 03:00:00+00'"
ROWS_PER_DAY = 24 * 24


def with_table(resources: dict, table: str) -> dict:
    database = resources["source"].database
    return {**resources, "source": DuckDBSourceResource(database=database, **{**DEMO_SOURCE, "table": table})}


def run_fails(resources, selection=INGEST, partitions=(DAY, DAY)) -> str:
    with pytest.raises(Exception) as info:
        materialize_days(*partitions, resources=resources, selection=selection)
    return failure_text(info.value)


def written(folder: Path, key: str | None = None) -> list[str]:
    """Artifact files (and left-over temporary files) under ``folder``, of partition ``key`` if given."""
    files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    data = [f for f in files if f.endswith((".parquet", ".json", ".npz", ".tmp"))]
    return data if key is None else [f for f in data if key in f or f.endswith(".tmp")]


def copy_of(connection, name: str, where: str = "") -> None:
    connection.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM demo.sensor_readings {where}")


@pytest.fixture(scope="module")
def bad_database(demo_database, tmp_path_factory) -> str:
    """The demo's first two days, and copies of them with bad rows on 2026-01-02."""
    path = str(tmp_path_factory.mktemp("bad_rows") / "bad.duckdb")
    two_days = "WHERE ts < TIMESTAMPTZ '2026-01-03 00:00:00+00'"
    with duckdb.connect(path) as connection:
        connection.execute(f"ATTACH '{demo_database}' AS demo (READ_ONLY)")
        for name in ("clean", "dups", "exact_dups", "conflicting_dups", "null_entities", "bad_values"):
            copy_of(connection, name, two_days)
        one = f"sensor_id = 'sensor_0001' AND ts = {AT}"
        five = "sensor_id = 'sensor_0005' AND ts = TIMESTAMPTZ '2026-01-02 10:00:00+00'"
        # (sensor_0001, 03:00) three times with temperatures t, t+1, t+2; (sensor_0005, 10:00) twice, identical
        connection.execute(f"INSERT INTO dups SELECT * REPLACE (temperature + 1 AS temperature) FROM clean WHERE {one}")
        connection.execute(f"INSERT INTO dups SELECT * REPLACE (temperature + 2 AS temperature) FROM clean WHERE {one}")
        connection.execute(f"INSERT INTO dups SELECT * FROM clean WHERE {five}")
        connection.execute(f"INSERT INTO exact_dups SELECT * FROM clean WHERE {one} OR {five}")
        connection.execute(
            f"INSERT INTO conflicting_dups SELECT * REPLACE ('fault-x' AS status) FROM clean WHERE {one}"
        )
        connection.execute(
            "INSERT INTO null_entities SELECT * REPLACE (NULL AS sensor_id) FROM clean "
            "WHERE sensor_id = 'sensor_0002' AND ts >= TIMESTAMPTZ '2026-01-02 05:00:00+00' "
            "AND ts < TIMESTAMPTZ '2026-01-02 07:00:00+00'"
        )
        # +inf in a test row, 1e39 (beyond float32) in a validation row, -inf in a train row
        connection.execute(
            "UPDATE bad_values SET humidity = 'inf'::DOUBLE WHERE sensor_id = 'sensor_0002' "
            "AND ts >= TIMESTAMPTZ '2026-01-02 05:00:00+00'"
        )
        connection.execute(
            "UPDATE bad_values SET pressure = 1e39 WHERE sensor_id = 'sensor_0003' "
            "AND ts = TIMESTAMPTZ '2026-01-02 07:00:00+00'"
        )
        connection.execute(f"UPDATE bad_values SET load = '-inf'::DOUBLE WHERE {one}")
        connection.execute("DETACH demo")
    return path


@pytest.fixture
def bad(bad_database, tmp_path) -> dict:
    return make_resources(bad_database, str(tmp_path / "artifacts"))


def test_duplicates_fail_by_default_naming_partition_count_examples_and_the_setting(bad, tmp_path):
    message = run_fails(with_table(bad, "dups"))
    assert f"partition {DAY}" in message
    assert "2 (sensor_id, ts) keys occur more than once (3 extra rows)" in message
    assert "('sensor_0001', 2026-01-02T03:00:00+00:00) x3" in message
    assert "('sensor_0005', 2026-01-02T10:00:00+00:00) x2" in message
    assert "settings.on_duplicate" in message and "'keep_last'" in message and "'mean'" in message
    assert written(tmp_path / "artifacts") == []


@pytest.mark.parametrize("policy", ["keep_last", "mean"])
def test_on_duplicate_keeps_one_row_per_key_and_counts_what_it_merged(bad, bad_database, tmp_path, policy):
    resources = with_table(make_resources(bad_database, str(tmp_path / "artifacts"), on_duplicate=policy), "dups")
    result = materialize_days(DAY, DAY, resources=resources, selection=INGEST)
    assert result.success
    metadata = day_figures(result, "raw_chunk", DAY)
    removed = "duplicate_rows_merged" if policy == "mean" else "duplicate_rows_dropped"
    assert metadata["rows"] == ROWS_PER_DAY and metadata["duplicate_keys"] == 2 and metadata[removed] == 3
    assert metadata["on_duplicate"] == policy
    store = ArtifactStore(str(tmp_path / "artifacts"))
    raw = store.read_frame("raw_chunk", DAY)
    assert len(raw) == ROWS_PER_DAY and not raw.duplicated(["sensor_id", "ts"]).any()
    assert len(store.read_frame("split_data", DAY)) == len(store.read_frame("cyclical_features", DAY)) == ROWS_PER_DAY
    assert store.read_json("preprocess_stats", DAY)["n_train_rows"] < ROWS_PER_DAY
    with duckdb.connect(bad_database, read_only=True) as connection:
        clean = connection.execute(
            f"SELECT temperature FROM clean WHERE sensor_id = 'sensor_0001' AND ts = {AT}"
        ).fetchone()[0]
    cell = raw.loc[
        (raw["sensor_id"] == "sensor_0001") & (raw["ts"] == pd.Timestamp("2026-01-02 03:00", tz="UTC")), "temperature"
    ].item()
    if policy == "mean":
        assert cell == pytest.approx(clean + 1.0, rel=1e-12)
    else:  # ties in (entity, ts) come in the engine's order: one of the three
        assert min(abs(cell - clean - d) for d in (0.0, 1.0, 2.0)) < 1e-9


def test_identical_duplicates_under_keep_last_give_the_clean_table_s_ingest(bad_database, tmp_path):
    clean = make_resources(bad_database, str(tmp_path / "clean"))
    merged = make_resources(bad_database, str(tmp_path / "merged"), on_duplicate="keep_last")
    assert materialize_days(DAY, DAY, resources=with_table(clean, "clean"), selection=INGEST).success
    assert materialize_days(DAY, DAY, resources=with_table(merged, "exact_dups"), selection=INGEST).success
    a, b = ArtifactStore(str(tmp_path / "clean")), ArtifactStore(str(tmp_path / "merged"))
    for asset in ("raw_chunk", "split_data", "cyclical_features"):
        pd.testing.assert_frame_equal(a.read_frame(asset, DAY), b.read_frame(asset, DAY))
    assert a.read_json("preprocess_stats", DAY) == b.read_json("preprocess_stats", DAY)


def test_mean_refuses_duplicates_that_disagree_in_another_column(bad_database, tmp_path):
    resources = make_resources(bad_database, str(tmp_path / "artifacts"), on_duplicate="mean")
    message = run_fails(with_table(resources, "conflicting_dups"))
    assert f"partition {DAY}" in message and "column 'status'" in message and "'fault-x'" in message
    assert "('sensor_0001', 2026-01-02T03:00:00+00:00)" in message
    assert written(tmp_path / "artifacts") == []


def test_null_entity_ids_fail_naming_partition_count_and_column(bad, tmp_path):
    message = run_fails(with_table(bad, "null_entities"))
    assert f"partition {DAY}" in message and "2 rows have a NULL entity id in column 'sensor_id'" in message
    assert "cannot be placed in any series" in message and "not supported between" not in message
    assert written(tmp_path / "artifacts") == []


def test_non_finite_and_overflowing_values_fail_in_any_split_naming_column_partition_count(bad, tmp_path):
    message = run_fails(with_table(bad, "bad_values"))
    assert f"partition {DAY}" in message
    assert (
        "column 'humidity' has 19 non-finite or out-of-range values (first: inf at sensor_id='sensor_0002', "
        "ts=2026-01-02T05:00:00+00:00)" in message
    )  # sensor_0002 is a test series
    assert (
        "column 'pressure' has 1 non-finite or out-of-range values (first: 1e+39 at sensor_id='sensor_0003'" in message
    )  # validation
    assert "column 'load' has 1 non-finite or out-of-range values (first: -inf at sensor_id='sensor_0001'" in message
    assert "settings.dtype float32" in message and "NULLs are imputed" in message
    assert "JSON compliant" not in message
    assert written(tmp_path / "artifacts") == []


def test_after_fixing_the_table_the_next_run_gives_a_clean_run_s_pca_models(bad_database, demo_database, tmp_path):
    """A range run fails at the bad day (the day before is kept, the bad day leaves nothing); the table is
    fixed in place; the next run over the same artifacts equals a run on a table that was never bad."""
    days = ("2026-01-01", DAY)
    with duckdb.connect(bad_database) as connection:
        connection.execute("CREATE OR REPLACE TABLE to_fix AS SELECT * FROM dups")
    resources = with_table(make_resources(bad_database, str(tmp_path / "artifacts")), "to_fix")
    assert "2 (sensor_id, ts) keys occur more than once" in run_fails(resources, None, days)
    assert written(tmp_path / "artifacts", DAY) == []
    assert written(tmp_path / "artifacts", days[0])  # the good day before it was written
    with duckdb.connect(bad_database) as connection:  # the fix: one row per key
        connection.execute("CREATE OR REPLACE TABLE to_fix AS SELECT * FROM clean")
    assert materialize_days(*days, resources=resources).success
    clean = make_resources(demo_database, str(tmp_path / "clean"))
    assert materialize_days(*days, resources=clean).success
    fixed, reference = ArtifactStore(str(tmp_path / "artifacts")), ArtifactStore(str(tmp_path / "clean"))
    for stride in (1, 3, 5):
        ours, theirs = (s.read_arrays("pca_models", f"stride={stride}") for s in (fixed, reference))
        assert ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-12, err_msg=f"{stride} {name}")
