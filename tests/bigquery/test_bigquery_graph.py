"""The whole asset graph from BigQuery (the bqemulator server) equals the graph from DuckDB on the same rows.

The same demo rows are written to a DuckDB file and to an emulator table; the graph is
materialised from each (and from BigQuery with pushdown: split and cyclical features
computed by the server) over three daily partitions, and every artifact is compared.
Not exercised offline: the Storage Read API (the emulator serves it for stored tables
only, not query results), credentials (the emulator takes anonymous ones), and a real
bigframes Session (it cannot start against the emulator: see test_pushdown.py). For the
``bigframes`` engine the session is a stand-in that runs the query bigframes would receive
on the emulator; everything around it is real.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from google.cloud import bigquery

from emberharmony_assets import testing
from emberharmony_assets.bigquery import BigQuerySourceResource
from emberharmony_assets.resources import DuckDBSourceResource
from emberharmony_core.demo import FEATURES, DemoConfig, write_demo_table
from emberharmony_core.layout import load_stride_windows, read_asset_frame
from emberharmony_core.store import ArtifactStore
from tests.conftest import materialized_metadata

PARTITIONS = ["2026-01-01", "2026-01-02", "2026-01-03"]
DEMO = DemoConfig(entities=24, days=3, cadence_minutes=60, start="2026-01-01")
COLUMNS = dict(
    timestamp_column="ts",
    entity_column="sensor_id",
    feature_columns=list(FEATURES),
    categorical_columns=["site", "status"],
    extra_columns=["maintenance", "load_next_hour"],
)
SCHEMA = (
    [bigquery.SchemaField("sensor_id", "STRING"), bigquery.SchemaField("ts", "TIMESTAMP")]
    + [bigquery.SchemaField(name, "FLOAT64") for name in FEATURES]
    + [
        bigquery.SchemaField("site", "STRING"),
        bigquery.SchemaField("status", "STRING"),
        bigquery.SchemaField("maintenance", "BOOL"),
        bigquery.SchemaField("load_next_hour", "FLOAT64"),
    ]
)


def demo_rows(database: str) -> pd.DataFrame:
    """The demo table's rows (without the STRUCT column), as ``write_demo_table`` writes them."""
    import duckdb

    write_demo_table(database, DEMO)
    with duckdb.connect(database) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(f"SELECT * EXCLUDE (meta) FROM {DEMO.table}").df()


@pytest.fixture(scope="module")
def sources(bq_client, bq_dataset, tmp_path_factory):
    database = str(tmp_path_factory.mktemp("duckdb") / "same.duckdb")
    frame = demo_rows(database)
    import duckdb

    with duckdb.connect(database) as connection:
        connection.execute("CREATE TABLE readings AS SELECT * FROM frame")
    table = f"{bq_dataset}.readings"
    bq_client.delete_table(table, not_found_ok=True)
    bq_client.create_table(bigquery.Table(table, schema=SCHEMA))
    records = []
    for record in frame.to_dict("records"):
        record["ts"] = record["ts"].isoformat()
        records.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
    for start in range(0, len(records), 500):
        assert bq_client.insert_rows_json(table, records[start : start + 500]) == []
    return database, table


def run(source, artifacts):
    resources = testing.resources(source, artifacts, target_column="load_next_hour", n_components=8)
    result = testing.materialize_days(PARTITIONS[0], PARTITIONS[-1], resources=resources)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    return ArtifactStore(artifacts), result


@pytest.fixture(scope="module")
def duckdb_graph(sources, tmp_path_factory):
    database, _ = sources
    return run(
        DuckDBSourceResource(database=database, table="readings", **COLUMNS),
        str(tmp_path_factory.mktemp("from_duckdb")),
    )[0]


class StandInSession:
    """What BigFramesPushdownReader uses of a bigframes Session, answered by the emulator."""

    queries: list[str] = []

    def __init__(self, client):
        self.bqclient = client

    def read_gbq_query(self, query, configuration, allow_large_results):
        StandInSession.queries.append(query)
        job_config = bigquery.QueryJobConfig.from_api_repr({"query": configuration["query"]})
        table = self.bqclient.query(query, job_config=job_config).result().to_arrow(create_bqstorage_client=False)
        return StandInFrame(table.to_pandas())


class StandInFrame:
    """What BigFramesPushdownReader uses of a bigframes DataFrame: sort_values (here in pandas; bigframes
    sorts in BigQuery) and to_pandas_batches (pages of at most page_size rows, at least one frame)."""

    def __init__(self, frame):
        self.frame = frame

    @property
    def dtypes(self):
        return self.frame.dtypes

    def to_pandas(self):
        return self.frame

    def sort_values(self, by, *, na_position="last", **kwargs):
        return StandInFrame(self.frame.sort_values(list(by), kind="stable", na_position=na_position))

    def to_pandas_batches(self, page_size=None, **kwargs):
        if self.frame.empty:
            yield self.frame
        step = page_size or max(len(self.frame), 1)
        for offset in range(0, len(self.frame), step):
            yield self.frame.iloc[offset : offset + step]


@pytest.mark.parametrize(
    "pushdown, engine",
    [(False, "sql"), (True, "sql"), (True, "bigframes")],
    ids=["rows", "pushdown", "pushdown-bigframes-standin"],
)
def test_graph_from_bigquery_equals_graph_from_duckdb(
    sources, duckdb_graph, bq_emulator, tmp_path, monkeypatch, pushdown, engine
):
    _, table = sources
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator.rest_url)
    source = BigQuerySourceResource(
        table=table, project=bq_emulator.project, pushdown=pushdown, pushdown_engine=engine, **COLUMNS
    )

    @contextmanager
    def stand_in(self):
        with self.client() as client:
            yield StandInSession(client)

    monkeypatch.setattr(BigQuerySourceResource, "bigframes_session", stand_in)
    StandInSession.queries.clear()
    store, result = run(source, str(tmp_path / "from_bigquery"))
    assert len(StandInSession.queries) == (len(PARTITIONS) if engine == "bigframes" else 0)  # one query per day
    raw_metadata = materialized_metadata(result, "raw_chunk")
    assert raw_metadata["source"].value == "BigQuerySourceResource"
    assert raw_metadata["pushdown"].value is pushdown
    for key in PARTITIONS:
        for asset in ("split_data", "cyclical_features", "features"):
            ours, theirs = read_asset_frame(store, asset, key), read_asset_frame(duckdb_graph, asset, key)
            assert list(ours["split"]) == list(theirs["split"])
            numeric = theirs.select_dtypes("number").columns
            pd.testing.assert_frame_equal(ours[numeric], theirs[numeric], check_dtype=False, rtol=1e-6, atol=1e-6)
        for stride in (1, 3, 5):
            ours, our_index = load_stride_windows(store, key, stride)
            theirs, their_index = load_stride_windows(duckdb_graph, key, stride)
            pd.testing.assert_frame_equal(our_index, their_index)
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    for stride in (1, 3, 5):
        ours, theirs = (s.read_arrays("pca_models", f"stride={stride}") for s in (store, duckdb_graph))
        assert int(ours["n_samples"]) == int(theirs["n_samples"])
        np.testing.assert_allclose(ours["explained_variance_ratio"], theirs["explained_variance_ratio"], rtol=1e-4)
        cosines = np.abs(np.sum(ours["components"] * theirs["components"], axis=1))
        assert cosines.min() > 1 - 1e-4
