"""``iter_window`` of BigQueryTableReader and BigQueryPushdownReader against the bqemulator emulator (REST).

The table holds a day of rows for four entities plus rows with a NULL entity (BigQuery
sorts NULLs FIRST unless told: the query says ``entity NULLS LAST``, which the emulator
accepts and honours), rows the day before / after and on the bounds. Checked: chunk
sizes for rows_per_chunk 1, 7, 1000, their concatenation equals ``read_window`` exactly,
(entity NULLS LAST, ts) order across chunk boundaries, ``metadata["chunks"]`` /
``["rows"]`` / ``["pages"]`` (REST pages are at most ``rows_per_chunk`` rows), the empty
window (no chunk, schema from ``empty_frame()``), early close, validation before any request.

Not shown on the emulator: the Storage Read API path (the emulator cannot serve a query's
result table over it, see test_bigquery_source.py) -- there the batch sizes are the
server's and google-cloud-bigquery reads an ``ORDER BY`` result over a single stream,
which keeps the order; bytes processed / billed and cache hits (the emulator reports 0 /
None); a real query's result paging across several REST pages of a large result beyond
these few pages.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from emberharmony_core.sources.base import DEFAULT_ROWS_PER_CHUNK, TableSpec
from emberharmony_core.sources.bigquery import BigQueryTableReader
from emberharmony_core.sources.pushdown import BigQueryPushdownReader, pushdown_columns

TABLE = "stream_readings"
START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 2, tzinfo=UTC)


def _rows() -> list[dict]:
    rows, rng = [], np.random.default_rng(11)
    for e, entity in enumerate(["delta", "alpha", "charlie", "bravo"]):
        for i, minutes in enumerate(range(-120, 24 * 60 + 120, 97 + 5 * e)):
            ts = pd.Timestamp("2024-03-01T00:00:00Z") + pd.Timedelta(minutes=minutes, microseconds=13 * e)
            rows.append(
                {
                    "entity": entity,
                    "ts": ts.isoformat(),
                    "uid": 100 * e + i,
                    "f": None if i % 6 == 2 else float(rng.normal()),
                    "cat": ["x", "y", None][i % 3],
                }
            )
    for i, minutes in enumerate((700, 3, 1439, 61)):
        ts = pd.Timestamp("2024-03-01T00:00:00Z") + pd.Timedelta(minutes=minutes)
        rows.append({"entity": None, "ts": ts.isoformat(), "uid": 900 + i, "f": float(i), "cat": "x"})
    rows.append({"entity": "alpha", "ts": "2024-03-01T00:00:00+00:00", "uid": 990, "f": 1.0, "cat": "y"})
    rows.append({"entity": "bravo", "ts": "2024-03-02T00:00:00+00:00", "uid": 991, "f": 2.0, "cat": "y"})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _expected(columns) -> pd.DataFrame:
    frame = pd.DataFrame(_rows())
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    frame["f"] = frame["f"].astype("float64")
    frame = frame[(frame["ts"] >= pd.Timestamp(START)) & (frame["ts"] < pd.Timestamp(END))]
    return frame.sort_values(["entity", "ts"], na_position="last", kind="stable").reset_index(drop=True)[columns]


@pytest.fixture(scope="module")
def table(bq_client, bq_dataset) -> str:
    from google.cloud import bigquery

    name = f"{bq_dataset}.{TABLE}"
    schema = [
        bigquery.SchemaField("entity", "STRING"),
        bigquery.SchemaField("ts", "TIMESTAMP"),
        bigquery.SchemaField("uid", "INT64"),
        bigquery.SchemaField("f", "FLOAT64"),
        bigquery.SchemaField("cat", "STRING"),
    ]
    bq_client.delete_table(name, not_found_ok=True)
    bq_client.create_table(bigquery.Table(name, schema=schema))
    assert bq_client.insert_rows_json(name, _rows()) == []
    return name


def _spec(table: str) -> TableSpec:
    return TableSpec(
        table=table,
        timestamp_column="ts",
        entity_column="entity",
        feature_columns=("f",),
        categorical_columns=("cat",),
        extra_columns=("uid",),
    )


def _readers(client, table, page_size):
    return {
        "rows": BigQueryTableReader(client, _spec(table), use_storage_api=False, page_size=page_size),
        "pushdown": BigQueryPushdownReader(
            client, _spec(table), split_key="uid", use_storage_api=False, page_size=page_size
        ),
    }


def _in_order(frame: pd.DataFrame) -> bool:
    keys = list(zip(frame["entity"].isna(), frame["entity"].fillna(""), frame["ts"], strict=True))
    return all(a <= b for a, b in zip(keys, keys[1:], strict=False))


@pytest.mark.parametrize("kind", ["rows", "pushdown"])
@pytest.mark.parametrize("rows_per_chunk", [1, 7, 1000])
def test_chunks_concatenate_to_read_window(bq_client, table, kind, rows_per_chunk):
    page_size = 5
    reader = _readers(bq_client, table, page_size)[kind]
    read = reader.read_window(START, END)
    with reader.iter_window(START, END, rows_per_chunk=rows_per_chunk) as stream:
        chunks = list(stream)
    total = len(read.frame)
    assert total == len(_expected(["ts"])) > 40
    assert [len(c) for c in chunks] == [rows_per_chunk] * (total // rows_per_chunk) + (
        [total % rows_per_chunk] if total % rows_per_chunk else []
    )
    columns = _spec(table).columns if kind == "rows" else pushdown_columns(_spec(table))
    assert stream.columns == columns
    for chunk in chunks:
        assert list(chunk.columns) == columns and str(chunk["ts"].dtype) == "datetime64[ns, UTC]"
        assert isinstance(chunk.index, pd.RangeIndex) and chunk.index.start == 0
    whole = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(whole, read.frame, check_exact=True)
    assert _in_order(whole) and whole["entity"].iloc[-4:].isna().all()  # NULLS LAST, across chunks
    base = _spec(table).columns
    pd.testing.assert_frame_equal(whole[base], _expected(base), check_exact=True)

    meta = stream.metadata
    assert meta["rows"] == read.metadata["rows"] == total
    assert meta["chunks"] == len(chunks) and read.metadata["chunks"] == -(-total // DEFAULT_ROWS_PER_CHUNK) == 1
    assert meta["pages"] == -(-total // min(page_size, rows_per_chunk))  # a REST page never exceeds a chunk
    assert meta["storage_api"] is False and meta["job_id"] and meta["bytes_read"] > 0
    assert meta["seconds"] >= meta["query_seconds"] >= 0
    assert "NULLS LAST" in meta["query"] and meta["source"] == ("bigquery" if kind == "rows" else "bigquery-pushdown")
    if kind == "pushdown":
        assert set(whole["split"]) <= {"train", "validation", "test"} and meta["split_key"] == "uid"
        assert whole["ts_sin_hour"].between(-1, 1).all()


@pytest.mark.parametrize("kind", ["rows", "pushdown"])
def test_empty_window_yields_no_chunk(bq_client, table, kind):
    reader = _readers(bq_client, table, 5)[kind]
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)
    with reader.iter_window(start, end, rows_per_chunk=3) as stream:
        assert list(stream) == []
        empty = stream.empty_frame()
    assert stream.metadata["rows"] == 0 and stream.metadata["chunks"] == 0
    assert empty.empty and list(empty.columns) == stream.columns
    assert str(empty["ts"].dtype) == "datetime64[ns, UTC]" and empty["f"].dtype == np.float64
    read = reader.read_window(start, end)
    pd.testing.assert_frame_equal(read.frame, empty)
    assert read.metadata["rows"] == 0 and read.metadata["chunks"] == 0


def test_early_close_stops_reading(bq_client, table):
    reader = BigQueryTableReader(bq_client, _spec(table), use_storage_api=False, page_size=5)
    with reader.iter_window(START, END, rows_per_chunk=4) as stream:
        first = next(stream)
    assert len(first) == 4 and stream.metadata["chunks"] == 1 and stream.metadata["rows"] == 4
    assert stream.metadata["pages"] == 1  # the later pages were never fetched
    assert list(stream) == []
    pd.testing.assert_frame_equal(first, reader.read_window(START, END).frame.iloc[:4])


class _NoCallsClient:
    def __getattr__(self, name):
        raise AssertionError(f"client.{name} was used before rows_per_chunk was checked")


@pytest.mark.parametrize("bad", [0, -3, 1.5, None])
def test_rows_per_chunk_checked_before_any_request(table, bad):
    for reader in (
        BigQueryTableReader(_NoCallsClient(), _spec(table)),
        BigQueryPushdownReader(_NoCallsClient(), _spec(table), split_key="uid"),
    ):
        with pytest.raises(ValueError, match="rows_per_chunk"):
            reader.iter_window(START, END, rows_per_chunk=bad)


def test_query_runs_at_the_first_chunk(bq_client, table, monkeypatch):
    reader = BigQueryTableReader(bq_client, _spec(table), use_storage_api=False)
    reader.validate()
    queries = []
    original = bq_client.query
    monkeypatch.setattr(bq_client, "query", lambda *a, **k: queries.append(1) or original(*a, **k))
    stream = reader.iter_window(START, END, rows_per_chunk=10)
    assert queries == []
    assert len(next(stream)) == 10 and queries == [1]
    stream.close()
