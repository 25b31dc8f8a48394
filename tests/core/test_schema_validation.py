"""The schema check: every configured column exists and has a type that fits its role, checked against the
table's schema before anything is read or written; one error names every culprit (column, type, cast)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from emberharmony_core.sources.base import TableSpec
from emberharmony_core.sources.duckdb_source import DuckDBTableReader, check_database_file
from emberharmony_core.sources.schema import SchemaError, schema_problems, type_kind, validate_schema

DUCKDB_TYPES = {
    "sensor_id": "VARCHAR",
    "ts": "TIMESTAMP WITH TIME ZONE",
    "temperature": "DOUBLE",
    "load": "BIGINT",
    "site": "VARCHAR",
    "maintenance": "BOOLEAN",
    "meta": "STRUCT(firmware VARCHAR, rack INTEGER)",
    "load_next_hour": "DOUBLE",
    "note": "VARCHAR",
}
BIGQUERY_TYPES = {
    "sensor_id": "STRING",
    "ts": "TIMESTAMP",
    "temperature": "FLOAT",
    "load": "INTEGER",
    "site": "STRING",
    "maintenance": "BOOLEAN",
    "meta": "RECORD",
    "load_next_hour": "FLOAT",
}


def spec(**overrides) -> TableSpec:
    return TableSpec(
        **{
            **dict(
                table="readings",
                timestamp_column="ts",
                entity_column="sensor_id",
                feature_columns=("temperature", "load"),
                categorical_columns=("site",),
                extra_columns=("maintenance", "meta", "load_next_hour"),
            ),
            **overrides,
        }
    )


def problems_of(types, dialect="duckdb", table_spec=None, **settings) -> str:
    with pytest.raises(SchemaError) as info:
        validate_schema(table_spec or spec(), types, dialect=dialect, **settings)
    assert isinstance(info.value, ValueError)
    return str(info.value)


@pytest.mark.parametrize("dialect, types", [("duckdb", DUCKDB_TYPES), ("bigquery", BIGQUERY_TYPES)])
def test_a_fitting_configuration_passes(dialect, types):
    settings = dict(
        drop_columns=["maintenance", "meta_rack", "ts_sin_hour"],
        target_column="load_next_hour",
        split_key="sensor_id",
        force_categorical_columns=["meta_firmware", "load"],
        max_categories=1,
    )
    assert schema_problems(spec(), types, dialect=dialect, **settings) == []
    validate_schema(spec(), types, dialect=dialect)  # no settings: the source columns alone


def test_every_problem_is_in_one_error():
    types = {**DUCKDB_TYPES, "ts": "VARCHAR", "load": "VARCHAR"}
    message = problems_of(
        types,
        table_spec=spec(feature_columns=("temperature", "load", "humidty")),
        drop_columns=["tempreature"],
        target_column="load_next_hr",
        split_key="sensor",
        force_categorical_columns=["stie"],
        max_categories=0,
    )
    assert "(8 problems)" in message
    for culprit in [
        "no column 'humidty' (feature_columns)",
        "timestamp_column 'ts' is VARCHAR",
        "feature_columns 'load' is VARCHAR, not numeric",
        "no column 'tempreature' (drop_columns); did you mean 'temperature'?",
        "no column 'load_next_hr' (target_column); did you mean 'load_next_hour'?",
        "no column 'sensor' (split_key); did you mean 'sensor_id'?",
        "no column 'stie' (force_categorical_columns); did you mean 'site'?",
        "max_categories must be >= 1, got 0",
    ]:
        assert culprit in message, (culprit, message)
    assert "its columns are: sensor_id VARCHAR, ts VARCHAR" in message  # the schema, for reference


@pytest.mark.parametrize(
    "dialect, kind, cast",
    [
        ("duckdb", "VARCHAR", 'CAST("load" AS DOUBLE)'),
        ("duckdb", "DECIMAL(18,3)", 'CAST("load" AS DOUBLE)'),  # Python Decimal objects: one-hot encoded as text
        ("duckdb", "HUGEINT", 'CAST("load" AS DOUBLE)'),
        ("bigquery", "STRING", "CAST(`load` AS FLOAT64)"),
        ("bigquery", "NUMERIC", "CAST(`load` AS FLOAT64)"),
    ],
)
def test_a_non_numeric_feature_names_column_type_and_cast(dialect, kind, cast):
    types = {**(DUCKDB_TYPES if dialect == "duckdb" else BIGQUERY_TYPES), "load": kind}
    message = problems_of(types, dialect)
    assert f"feature_columns 'load' is {kind}, not numeric" in message and cast in message
    if kind in ("VARCHAR", "STRING"):
        assert "categorical_columns" in message


def test_a_feature_that_is_also_categorical_is_not_flagged():
    types = {**DUCKDB_TYPES, "load": "VARCHAR"}
    assert schema_problems(spec(categorical_columns=("site", "load")), types) == []
    assert schema_problems(spec(), types, force_categorical_columns=["load"]) == []


def test_other_feature_types_get_the_role_they_belong_to():
    message = problems_of({**DUCKDB_TYPES, "load": "TIMESTAMP"})
    assert "feature_columns 'load' is TIMESTAMP" in message and "datetime_columns" in message
    message = problems_of({**DUCKDB_TYPES, "load": "STRUCT(a DOUBLE)"})
    assert "feature_columns 'load' is STRUCT(a DOUBLE)" in message and "extra_columns" in message
    message = problems_of({**DUCKDB_TYPES, "load": "DOUBLE[]"})
    assert "feature_columns 'load' is DOUBLE[]" in message


@pytest.mark.parametrize(
    "kind, advice",
    [
        ("VARCHAR", 'CAST("ts" AS TIMESTAMP)'),
        ("BIGINT", 'to_timestamp("ts")'),
        ("DOUBLE", 'to_timestamp("ts")'),
    ],
)
def test_a_timestamp_that_is_not_one_names_column_and_type(kind, advice):
    message = problems_of({**DUCKDB_TYPES, "ts": kind})
    assert f"timestamp_column 'ts' is {kind}, not a TIMESTAMP or DATE" in message and advice in message


@pytest.mark.parametrize("kind", ["TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "DATE"])
def test_duckdb_timestamp_types_are_accepted(kind):
    assert schema_problems(spec(), {**DUCKDB_TYPES, "ts": kind}) == []


def test_bigquery_timestamp_column_must_be_a_timestamp():
    for kind in ("DATETIME", "DATE"):  # the window query's @start / @end are TIMESTAMP parameters
        message = problems_of({**BIGQUERY_TYPES, "ts": kind}, "bigquery")
        assert f"timestamp_column 'ts' is {kind}, not TIMESTAMP" in message and "TIMESTAMP(`ts`)" in message
    message = problems_of({**BIGQUERY_TYPES, "ts": "INTEGER"}, "bigquery")
    assert "TIMESTAMP_SECONDS(`ts`)" in message
    # cyclical columns may be any of the three (pushdown and local features handle them)
    types = {**BIGQUERY_TYPES, "d": "DATE", "dt": "DATETIME", "s": "STRING"}
    assert schema_problems(spec(datetime_columns=("ts", "d", "dt")), types, dialect="bigquery") == []
    message = problems_of(types, "bigquery", table_spec=spec(datetime_columns=("ts", "s")))
    assert "datetime_columns 's' is STRING, not a TIMESTAMP, DATETIME or DATE" in message


def test_nested_values_where_a_scalar_is_needed():
    types = {**DUCKDB_TYPES, "site": "STRUCT(a VARCHAR)", "sensor_id": "VARCHAR[]"}
    message = problems_of(types, target_column="meta", split_key="sensor_id")
    for culprit in (
        "categorical_columns 'site' is STRUCT(a VARCHAR)",
        "entity_column 'sensor_id' is VARCHAR[]",
        "split_key 'sensor_id' is VARCHAR[]",
        "target_column 'meta' is STRUCT(firmware VARCHAR, rack INTEGER)",
    ):
        assert culprit in message, (culprit, message)


def test_settings_columns_must_be_read_not_only_in_the_table():
    message = problems_of(DUCKDB_TYPES, target_column="note", split_key="note", force_categorical_columns=["note"])
    for role in ("target_column", "split_key", "force_categorical_columns"):
        assert (
            f"{role} 'note' is a column of the table but the source does not read it: add it to the "
            "source's extra_columns" in message
        )
    assert schema_problems(spec(), DUCKDB_TYPES, drop_columns=["note"]) == []  # dropping an unread column is harmless


def test_struct_fields_are_checked_against_the_struct():
    assert schema_problems(spec(), DUCKDB_TYPES, drop_columns=["meta_rack"], target_column="meta_firmware") == []
    message = problems_of(DUCKDB_TYPES, drop_columns=["meta_serial"])
    assert "no column 'meta_serial' (drop_columns)" in message
    # BigQuery reports RECORD without its fields: any field name of a read RECORD is accepted
    assert schema_problems(spec(), BIGQUERY_TYPES, dialect="bigquery", drop_columns=["meta_serial"]) == []


@pytest.mark.parametrize("value", [0, -3])
def test_max_categories_must_be_at_least_one(value):
    assert f"max_categories must be >= 1, got {value}" in problems_of(DUCKDB_TYPES, max_categories=value)


def test_the_missing_column_message_keeps_its_hints():
    message = problems_of(DUCKDB_TYPES, table_spec=spec(categorical_columns=("Site",), feature_columns=("temprature",)))
    assert "no column 'Site' (categorical_columns); did you mean 'site'?" in message
    assert "no column 'temprature' (feature_columns); did you mean 'temperature'?" in message


def test_type_kinds():
    assert [
        type_kind(t)
        for t in (
            "UBIGINT",
            "REAL",
            "DECIMAL(38,9)",
            "ENUM('a', 'b')",
            "TIMESTAMP_S",
            "DATE",
            "MAP(VARCHAR, INTEGER)",
            "INTEGER[3]",
            "BLOB",
            "INTERVAL",
        )
    ] == ["integer", "float", "decimal", "string", "timestamp", "date", "nested", "nested", "other", "other"]
    assert type_kind("DATETIME", "bigquery") == "datetime" and type_kind("DATETIME", "duckdb") == "timestamp"
    assert [type_kind(t, "bigquery") for t in ("INT64", "FLOAT64", "BIGNUMERIC", "BOOL", "RECORD", "BYTES")] == [
        "integer",
        "float",
        "decimal",
        "boolean",
        "nested",
        "other",
    ]


# ---------------------------------------------------------------------------------- a real DuckDB file


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("schema") / "bad.duckdb")
    frame = pd.DataFrame(
        {
            "sensor_id": ["a", "a", "b"],
            "ts": ["2024-03-01 00:00", "2024-03-01 01:00", "2024-03-01 00:00"],
            "temperature": ["1.5", "2.5", "3.5"],
            "load": [1.0, 2.0, 3.0],
        }
    )
    with duckdb.connect(path) as connection:
        connection.register("frame", frame)
        connection.execute("CREATE TABLE readings AS SELECT * FROM frame")
    return path


def test_the_reader_names_a_text_timestamp_instead_of_a_binder_error(database):
    table_spec = TableSpec(
        table="readings", timestamp_column="ts", entity_column="sensor_id", feature_columns=("temperature", "load")
    )
    reader = DuckDBTableReader(database, table_spec)
    with pytest.raises(ValueError) as info:
        reader.validate(max_categories=0)
    message = str(info.value)
    assert "Binder Error" not in message and "(3 problems)" in message
    assert "timestamp_column 'ts' is VARCHAR" in message and 'CAST("ts" AS TIMESTAMP)' in message
    assert "feature_columns 'temperature' is VARCHAR, not numeric" in message
    assert 'CAST("temperature" AS DOUBLE)' in message and "max_categories must be >= 1, got 0" in message


def test_a_missing_database_file_is_named(tmp_path):
    missing = str(tmp_path / "demo.duckbd")
    with pytest.raises(FileNotFoundError) as info:
        check_database_file(missing)
    assert repr(missing) in str(info.value) and "does not exist" in str(info.value) and "make demo" in str(info.value)
    with pytest.raises(FileNotFoundError, match="is a directory"):
        check_database_file(str(tmp_path))
    reader = DuckDBTableReader(missing, TableSpec(table="readings", timestamp_column="ts", feature_columns=("load",)))
    with pytest.raises(FileNotFoundError, match="demo.duckbd"):
        reader.validate()
    assert not (tmp_path / "demo.duckbd").exists()  # nothing created at the typo'd path
    assert check_database_file(":memory:") == ":memory:"
