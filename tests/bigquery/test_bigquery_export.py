"""BigQuery write-back (``bigquery_features``, ``bigquery_projected_windows``) against the bqemulator server.

The graph is materialised from an emulator table over three daily partitions together with the write-back
assets; the two BigQuery tables are read back with the BigQuery client and compared, day by day, with the
stored Parquet (``features``; ``projected_windows`` of every stride). Then one day is re-exported, after
the table was tampered with (a stray row added to that day, a value changed): the day again equals the
Parquet, row counts are what they were, the other days are untouched. Core-level tests cover an empty day
(the day is deleted), a column the table has and the data lacks (NULL), renamed column names, rows outside
the day and an existing table partitioned otherwise (refused, naming it), and the assets' default: off.

What the emulator cannot show (bqemulator 1.4):

* the partition decorator: it refuses ``table$YYYYMMDD`` as a destination ("Invalid table id for SQL"),
  and its ``WRITE_TRUNCATE`` empties the WHOLE table. So the emulator runs the ``transaction`` method
  (staging table, then DELETE + INSERT in one multi-statement transaction; the emulator does roll a failed
  transaction back). The ``partition_decorator`` method, BigQuery's default, is run here through a
  stand-in client that checks the load job it sends (destination ``table$YYYYMMDD``, PARQUET,
  WRITE_TRUNCATE, CREATE_NEVER, TimePartitioning(DAY, field)) and performs that partition replace on
  the emulator as a DELETE of the day plus an append: BigQuery's atomic partition swap itself is not shown.
* real partition pruning and partition metadata: the table's ``timePartitioning`` is stored and returned,
  but the emulator keeps no partitions (``INFORMATION_SCHEMA.PARTITIONS`` is empty, ``_PARTITIONDATE`` is
  NULL, ``table$__PARTITIONS_SUMMARY__`` is not found, bytes processed are 0), so that a day's DELETE
  touches only its partition, and costs nothing, is BigQuery's documented behaviour, not tested here.
* adding columns: the table patch that adds a new column (a refit preprocessor with a new category) is
  accepted into the emulator's catalog but not applied to its storage, so it is not exercised.
* the Storage Write API, credentials and IAM (dataEditor on the export dataset), the staging table's
  expiry, load-job byte limits, concurrent writers of one table (BigQuery cancels conflicting transactions;
  decorator loads of different days do not conflict), resumable uploads over 100 MiB.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize
from google.cloud import bigquery

from emberharmony_assets import testing
from emberharmony_assets.assets import all_assets
from emberharmony_assets.assets.export import EXPORT_FEATURES, EXPORT_PROJECTED, export_assets
from emberharmony_assets.bigquery import BigQuerySourceResource
from emberharmony_assets.resources import DuckDBSourceResource
from emberharmony_core.layout import FEATURES, PROJECTED, stride_folder
from emberharmony_core.sources.bigquery_export import (
    ExportError,
    ExportPart,
    ExportTarget,
    bigquery_column_names,
    export_partition,
)
from emberharmony_core.store import ArtifactStore
from tests.bigquery.conftest import ROOT
from tests.bigquery.test_bigquery_graph import COLUMNS, PARTITIONS, SCHEMA, demo_rows
from tests.conftest import materialized_metadata

EXPORT_DATASET = "emberharmony_export"
PREFIX = "eh_"
STRIDES = (1, 3, 5)


@pytest.fixture(scope="module")
def source_table(bq_client, bq_dataset, tmp_path_factory) -> str:
    table = f"{bq_dataset}.readings_export"
    bq_client.delete_table(table, not_found_ok=True)
    bq_client.create_table(bigquery.Table(table, schema=SCHEMA))
    records = []
    for record in demo_rows(str(tmp_path_factory.mktemp("demo") / "demo.duckdb")).to_dict("records"):
        record["ts"] = record["ts"].isoformat()
        records.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
    for start in range(0, len(records), 500):
        assert bq_client.insert_rows_json(table, records[start : start + 500]) == []
    return table


@pytest.fixture(scope="module")
def export_dataset(bq_client, bq_emulator) -> str:
    dataset = f"{bq_emulator.project}.{EXPORT_DATASET}"
    bq_client.create_dataset(dataset, exists_ok=True)
    return dataset


def resources_for(source, artifacts: str) -> dict:
    return testing.resources(source, artifacts, target_column="load_next_hour", n_components=8, rows_per_chunk=100)


@pytest.fixture(scope="module")
def exported(source_table, export_dataset, bq_emulator, tmp_path_factory):
    """The whole graph plus the write-back over the three days, in one run (rows_per_chunk 100: several chunks
    a day, so the export streams)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator.rest_url)
    source = BigQuerySourceResource(
        table=source_table,
        project=bq_emulator.project,
        export_dataset=EXPORT_DATASET,
        export_table_prefix=PREFIX,
        **COLUMNS,
    )
    artifacts = str(tmp_path_factory.mktemp("export_artifacts"))
    try:
        result = testing.materialize_days(
            PARTITIONS[0],
            PARTITIONS[-1],
            resources=resources_for(source, artifacts),
            assets=[*all_assets, *export_assets],
        )
    finally:
        patch.undo()
    assert result.success
    return source, artifacts, ArtifactStore(artifacts), result


def bq_day(client, table: str, column: str, key: str, order: list[str]) -> pd.DataFrame:
    sql = (
        f"SELECT * FROM `{table}` WHERE `{column}` >= TIMESTAMP '{key} 00:00:00+00' "
        f"AND `{column}` < TIMESTAMP_ADD(TIMESTAMP '{key} 00:00:00+00', INTERVAL 1 DAY)"
    )
    frame = client.query(sql).result().to_arrow(create_bqstorage_client=False).to_pandas()
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def assert_same(ours: pd.DataFrame, stored: pd.DataFrame, time_column: str) -> None:
    """The BigQuery rows equal the stored Parquet's (floats widened to FLOAT64 exactly, time at microseconds)."""
    assert len(ours) == len(stored)
    assert list(ours.columns) == list(stored.columns)
    for column in stored.columns:
        if column == time_column:
            np.testing.assert_array_equal(
                pd.to_datetime(ours[column], utc=True).dt.floor("us").to_numpy(),
                pd.to_datetime(stored[column], utc=True).dt.floor("us").to_numpy(),
            )
        elif pd.api.types.is_float_dtype(stored[column]):
            np.testing.assert_array_equal(
                ours[column].to_numpy(dtype=np.float64), stored[column].to_numpy(dtype=np.float64)
            )
        else:
            assert list(ours[column]) == list(stored[column]), column


def stored_projected(store: ArtifactStore, key: str) -> pd.DataFrame:
    frames = [store.read_frame(PROJECTED, key, stride_folder(s)).assign(stride=s) for s in STRIDES]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[["stride", *[c for c in frame.columns if c != "stride"]]]
    return frame.sort_values(["stride", "sensor_id", "end_time"], kind="stable").reset_index(drop=True)


def stored_features(store: ArtifactStore, key: str) -> pd.DataFrame:
    return store.read_frame(FEATURES, key).sort_values(["sensor_id", "ts"], kind="stable").reset_index(drop=True)


def check_tables(client, store: ArtifactStore, features: str, projected: str, keys=PARTITIONS) -> None:
    for key in keys:
        assert_same(bq_day(client, features, "ts", key, ["sensor_id", "ts"]), stored_features(store, key), "ts")
        assert_same(
            bq_day(client, projected, "end_time", key, ["stride", "sensor_id", "end_time"]),
            stored_projected(store, key),
            "end_time",
        )


def day_counts(client, table: str, column: str) -> dict:
    rows = client.query(
        f"SELECT CAST(DATE(`{column}`) AS STRING) AS day, COUNT(*) AS n FROM `{table}` GROUP BY day ORDER BY day"
    ).result()
    return {row["day"]: row["n"] for row in rows}


def test_write_back_equals_the_stored_parquet(exported, bq_client, export_dataset):
    _, _, store, result = exported
    features, projected = f"{export_dataset}.{PREFIX}features", f"{export_dataset}.{PREFIX}projected_windows"
    check_tables(bq_client, store, features, projected)
    assert day_counts(bq_client, features, "ts") == {k: store.frame_rows(FEATURES, k) for k in PARTITIONS}

    table = bq_client.get_table(features)  # partitioned by day on the timestamp, clustered, as created
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", "ts")
    assert table.clustering_fields == ["split", "sensor_id"]
    table = bq_client.get_table(projected)
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", "end_time")
    assert table.clustering_fields == ["stride", "split", "sensor_id"]
    assert [f.name for f in table.schema][:4] == ["stride", "sensor_id", "end_time", "split"]
    pc_types = {f.field_type for f in table.schema if f.name.startswith("pc_")}
    assert pc_types and pc_types <= {"FLOAT", "FLOAT64"}  # BigQuery says FLOAT, the emulator FLOAT64

    metadata = materialized_metadata(result, EXPORT_PROJECTED)
    assert metadata["table"].value == projected
    assert metadata["method"].value == "transaction"  # auto, on an emulator
    assert metadata["run_rows_total"].value == sum(len(stored_projected(store, k)) for k in PARTITIONS)
    assert not [t for t in bq_client.list_tables(export_dataset) if "__staging_" in t.table_id]  # dropped


def test_re_export_replaces_the_day(exported, bq_client, bq_emulator, export_dataset, monkeypatch):
    source, artifacts, store, _ = exported
    features, projected = f"{export_dataset}.{PREFIX}features", f"{export_dataset}.{PREFIX}projected_windows"
    key = PARTITIONS[1]
    before = {t: day_counts(bq_client, t, c) for t, c in ((features, "ts"), (projected, "end_time"))}
    # tamper with the day: a stray row and a changed value; the re-export must undo both
    bq_client.query(
        f"INSERT INTO `{projected}` (stride, sensor_id, end_time, split, pc_1) "
        f"VALUES (7, 'stray', TIMESTAMP '{key} 12:00:00+00', 'train', 1.5)"
    ).result()
    bq_client.query(f"UPDATE `{features}` SET temperature = 999 WHERE DATE(ts) = '{key}'").result()
    assert day_counts(bq_client, projected, "end_time")[key] == before[projected][key] + 1
    assert set(bq_day(bq_client, features, "ts", key, ["sensor_id", "ts"])["temperature"]) == {999.0}

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator.rest_url)
    for _ in range(2):  # twice: idempotent
        result = materialize(
            export_assets,
            resources=resources_for(source, artifacts),
            partition_key=key,
            instance=DagsterInstance.ephemeral(),
        )
        assert result.success
    assert materialized_metadata(result, EXPORT_FEATURES)["rows"].value == store.frame_rows(FEATURES, key)
    for table, column in ((features, "ts"), (projected, "end_time")):
        assert day_counts(bq_client, table, column) == before[table]  # row counts unchanged, every day
    check_tables(bq_client, store, features, projected)  # values equal the Parquet again, other days untouched


class DecoratorStandIn:
    """A client that forwards to the emulator, except a load on ``table$YYYYMMDD``: its job configuration is
    checked and recorded, and the partition replace it asks BigQuery for (WRITE_TRUNCATE of that day only) is
    done on the emulator as DELETE of the day + append (the emulator has no decorators)."""

    def __init__(self, client):
        self.client, self.loads = client, []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def load_table_from_file(self, data, destination, job_config=None, **kwargs):
        table, _, day = destination.partition("$")
        self.loads.append((destination, job_config))
        assert len(day) == 8 and day.isdigit(), destination
        assert job_config.source_format == "PARQUET"
        assert job_config.write_disposition == "WRITE_TRUNCATE"
        assert job_config.create_disposition == "CREATE_NEVER"
        assert job_config.time_partitioning.type_ == "DAY"
        field = job_config.time_partitioning.field
        start = f"{day[:4]}-{day[4:6]}-{day[6:]} 00:00:00+00"
        self.client.query(
            f"DELETE FROM `{table}` WHERE `{field}` >= TIMESTAMP '{start}' "
            f"AND `{field}` < TIMESTAMP_ADD(TIMESTAMP '{start}', INTERVAL 1 DAY)"
        ).result()
        config = bigquery.LoadJobConfig(
            source_format="PARQUET", write_disposition="WRITE_APPEND", schema=job_config.schema
        )
        return self.client.load_table_from_file(data, table, job_config=config, **kwargs)


def small_part(day: str, values, entity="a", hours=None) -> ExportPart:
    hours = range(len(values)) if hours is None else hours
    ts = pa.array([pd.Timestamp(f"{day} {h:02d}:30", tz="UTC") for h in hours], pa.timestamp("ns", tz="UTC"))
    table = pa.table({"entity": [entity] * len(values), "ts": ts, "site=north": pa.array(values, pa.float32())})
    return ExportPart(table.schema, table.to_batches(max_chunksize=2))


def read_all(client, table: str) -> pd.DataFrame:
    frame = client.query(f"SELECT * FROM `{table}`").result().to_arrow(create_bqstorage_client=False).to_pandas()
    return frame.sort_values(["ts"]).reset_index(drop=True)


@pytest.mark.parametrize("method", ["transaction", "partition_decorator"])
def test_export_partition_core(bq_client, export_dataset, method):
    table = f"{export_dataset}.core_{method}"
    bq_client.delete_table(table, not_found_ok=True)
    target = ExportTarget(table, "ts", clustering_fields=("entity",))
    client = DecoratorStandIn(bq_client) if method == "partition_decorator" else bq_client
    for day, values in (("2026-02-01", [1.0, 2.0, 3.0]), ("2026-02-02", [4.0, 5.0])):
        result = export_partition(client, target, date.fromisoformat(day), [small_part(day, values)], method=method)
        assert (result.method, result.rows, result.rows_in_bigquery) == (method, len(values), len(values))
    assert result.renamed == {"site=north": "site_north"}
    again = export_partition(client, target, date(2026, 2, 1), [small_part("2026-02-01", [7.0, 8.0])], method=method)
    assert again.rows == 2
    frame = read_all(bq_client, table)
    assert list(frame["site_north"]) == [7.0, 8.0, 4.0, 5.0]  # day 1 replaced, day 2 kept
    if method == "partition_decorator":
        assert [d for d, _ in client.loads] == [f"{table}$20260201", f"{table}$20260202", f"{table}$20260201"]

    # a day with no rows: the day is deleted
    empty = pa.table(
        {
            "entity": pa.array([], pa.string()),
            "ts": pa.array([], pa.timestamp("ns", tz="UTC")),
            "site=north": pa.array([], pa.float32()),
        }
    )
    assert export_partition(client, target, date(2026, 2, 1), [ExportPart(empty.schema, [])], method=method).rows == 0
    assert list(read_all(bq_client, table)["site_north"]) == [4.0, 5.0]

    # the data lacks a column the table has: loaded as NULL, the table unchanged
    lean = pa.table({"entity": ["b"], "ts": pa.array([pd.Timestamp("2026-02-03 01:00", tz="UTC")])})
    export_partition(client, target, date(2026, 2, 3), [ExportPart(lean.schema, lean.to_batches())], method=method)
    frame = read_all(bq_client, table)
    assert frame["entity"].tolist() == ["a", "a", "b"] and pd.isna(frame["site_north"].iloc[-1])


def test_export_refuses_what_does_not_fit(bq_client, export_dataset):
    table = f"{export_dataset}.core_refusals"
    bq_client.delete_table(table, not_found_ok=True)
    target = ExportTarget(table, "ts")
    with pytest.raises(ExportError, match=r"outside the day"):  # a row of the 2nd in the 1st's export
        export_partition(bq_client, target, date(2026, 2, 1), [small_part("2026-02-02", [1.0])])
    other = f"{export_dataset}.core_not_partitioned"
    bq_client.delete_table(other, not_found_ok=True)
    bq_client.create_table(bigquery.Table(other, schema=[bigquery.SchemaField("ts", "TIMESTAMP")]))
    with pytest.raises(ExportError, match=r"not time-partitioned.*partitioned by DAY on ts"):
        export_partition(bq_client, ExportTarget(other, "ts"), date(2026, 2, 1), [small_part("2026-02-01", [1.0])])
    with pytest.raises(ValueError, match="export method"):
        export_partition(bq_client, target, date(2026, 2, 1), [small_part("2026-02-01", [1.0])], method="merge")


def test_column_names_bigquery_accepts():
    assert bigquery_column_names(["ok", "site=north", "site north", "1st", "_PARTITIONTIME", "Ok"]) == {
        "ok": "ok",
        "site=north": "site_north",
        "site north": "site_north_2",
        "1st": "c_1st",
        "_PARTITIONTIME": "c__PARTITIONTIME",
        "Ok": "Ok_2",
    }


def test_write_back_is_off_by_default(source_table, bq_emulator, tmp_path, monkeypatch):
    names = {key.to_user_string() for a in all_assets for key in a.keys}
    assert not names & {EXPORT_FEATURES, EXPORT_PROJECTED}  # the default graph has no write-back
    # bound explicitly to a source without export_dataset: a warning, nothing materialised, nothing read
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator.rest_url)
    database = str(tmp_path / "tiny.duckdb")
    import duckdb

    with duckdb.connect(database) as connection:
        connection.execute("CREATE TABLE t AS SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00' AS ts, 1.0::DOUBLE AS x")
    for source in (
        BigQuerySourceResource(table=source_table, project=bq_emulator.project, **COLUMNS),
        DuckDBSourceResource(database=database, table="t", feature_columns=["x"]),
    ):
        instance = DagsterInstance.ephemeral()
        result = materialize(
            export_assets,
            resources=resources_for(source, str(tmp_path / "artifacts")),
            partition_key=PARTITIONS[0],
            instance=instance,
        )
        assert result.success and not result.get_asset_materialization_events()
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
        assert sum("BigQuery write-back is off" in m for m in messages) == 2, type(source).__name__
    code = (
        "from emberharmony_assets.assets import all_assets; from emberharmony_assets.definitions import defs; "
        "print(sorted(k.to_user_string() for a in all_assets for k in a.keys "
        "if k.to_user_string().startswith('bigquery'))); "
        "print(defs.resources['source'].export_table('projected_windows'))"
    )
    env = {
        **os.environ,
        "EMBERHARMONY_SOURCE": "bigquery",
        "EMBERHARMONY_BQ_TABLE": "test-project.src.readings",
        "EMBERHARMONY_BQ_COLUMNS": '{"feature_columns": ["x"]}',
        "EMBERHARMONY_BQ_EXPORT_DATASET": "out",
        "EMBERHARMONY_BQ_EXPORT_PREFIX": "eh_",
    }
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == [
        "['bigquery_features', 'bigquery_projected_windows']",
        "test-project.out.eh_projected_windows",
    ]
