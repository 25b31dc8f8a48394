"""``iter_window``: a window as bounded chunks, on a real DuckDB file.

Two tables hold the same rows: ``aware`` (TIMESTAMPTZ) and ``naive`` (TIMESTAMP holding
UTC). The rows: four entities over 2024-03-01 (plus rows the day before and after, one
exactly on each bound), rows with a NULL entity, NULL features, an INTEGER and a BOOLEAN
column with NULLs. Checked: chunk sizes, the concatenation equals ``read_window`` exactly,
(entity NULLS LAST, ts) order across chunk boundaries, the empty window (no chunk; the
schema from ``empty_frame()``), ``rows_per_chunk`` validation, early stop releasing a
shared connection, and the ``rechunk`` helper on uneven Arrow and pandas pieces.
No memory or timing assertions.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from itertools import pairwise

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from emberharmony_core.sources.base import DEFAULT_ROWS_PER_CHUNK, TableSpec, WindowStream, normalise_frame, rechunk
from emberharmony_core.sources.duckdb_source import DuckDBTableReader

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 2, tzinfo=UTC)


def _rows() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    stamps: list[pd.Timestamp] = []
    entities: list[str | None] = []
    for e, entity in enumerate(["delta", "alpha", "charlie", "bravo"]):  # not inserted in order
        for minutes in range(-90, 24 * 60 + 90, 37 + e):
            stamps.append(pd.Timestamp("2024-03-01T00:00:00Z") + pd.Timedelta(minutes=minutes, microseconds=e))
            entities.append(entity)
    for minutes in (5, 600, 61, 1439):  # NULL entity
        stamps.append(pd.Timestamp("2024-03-01T00:00:00Z") + pd.Timedelta(minutes=minutes))
        entities.append(None)
    for bound, entity in (("2024-03-01T00:00:00Z", "alpha"), ("2024-03-02T00:00:00Z", "alpha")):
        stamps.append(pd.Timestamp(bound))
        entities.append(entity)
    n = len(stamps)
    null = np.array(None, dtype=object)  # np.where's None as an array (numpy's stubs take no None)
    order = rng.permutation(n)
    frame = pd.DataFrame(
        {
            "entity": pd.Series(entities, dtype=object)[order].to_numpy(),
            "ts": pd.DatetimeIndex(stamps)[order],
            "f": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "n": pd.array(np.where(rng.random(n) < 0.05, null, rng.integers(-5, 5, n)), dtype="Int64"),
            "flag": pd.array(np.where(rng.random(n) < 0.05, null, rng.random(n) < 0.5), dtype="boolean"),
            "cat": rng.choice(np.array(["x", "y", None], dtype=object), n),
        }
    )
    return frame


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("streaming") / "rows.duckdb")
    aware = _rows()
    naive = aware.assign(ts=aware["ts"].dt.tz_localize(None))
    with duckdb.connect(path) as connection:
        connection.register("aware_rows", aware)
        connection.register("naive_rows", naive)
        connection.execute("CREATE TABLE aware AS SELECT * FROM aware_rows")
        connection.execute("CREATE TABLE naive AS SELECT * REPLACE (CAST(ts AS TIMESTAMP) AS ts) FROM naive_rows")
        types = dict(
            connection.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
            ).fetchall()
        )
    assert types["aware.ts"] == "TIMESTAMP WITH TIME ZONE" and types["naive.ts"] == "TIMESTAMP"
    assert types["aware.n"] == "BIGINT" and types["aware.flag"] == "BOOLEAN"
    return path


def _spec(table: str) -> TableSpec:
    return TableSpec(
        table=table,
        timestamp_column="ts",
        entity_column="entity",
        feature_columns=("f", "n"),
        categorical_columns=("cat",),
        extra_columns=("flag",),
    )


def _expected(start=START, end=END) -> pd.DataFrame:
    frame = _rows()
    frame = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
    return frame.sort_values(["entity", "ts"], na_position="last", kind="stable").reset_index(drop=True)


def _keys_in_order(frame: pd.DataFrame) -> bool:
    """(entity NULLS LAST, ts) non-decreasing from row to row."""
    keys = list(zip(frame["entity"].isna(), frame["entity"].fillna(""), frame["ts"], strict=True))
    return all(a <= b for a, b in pairwise(keys))


@pytest.mark.parametrize("table", ["aware", "naive"])
@pytest.mark.parametrize("rows_per_chunk", [1, 7, 1000])
def test_chunks_concatenate_to_read_window(database, table, rows_per_chunk):
    spec = _spec(table)
    reader = DuckDBTableReader(database, spec)
    read = reader.read_window(START, END)
    with reader.iter_window(START, END, rows_per_chunk=rows_per_chunk) as stream:
        assert isinstance(stream, WindowStream) and stream.columns == spec.columns
        chunks = list(stream)
    total = len(read.frame)
    assert total > 100
    assert stream.arrow_schema.field("flag").type == pa.bool_()  # one schema for every chunk's writer
    assert [len(c) for c in chunks] == [rows_per_chunk] * (total // rows_per_chunk) + (
        [total % rows_per_chunk] if total % rows_per_chunk else []
    )
    for chunk in chunks:
        assert list(chunk.columns) == spec.columns
        assert str(chunk["ts"].dtype) == "datetime64[ns, UTC]"
        assert isinstance(chunk.index, pd.RangeIndex) and chunk.index.start == 0 and chunk.index.step == 1
    whole = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(whole, read.frame, check_exact=True)
    assert _keys_in_order(whole)  # across chunk boundaries, not only inside chunks
    assert whole["entity"].isna().sum() == 4 and whole["entity"].iloc[-4:].isna().all()  # NULLS LAST
    assert stream.metadata["rows"] == read.metadata["rows"] == total
    assert stream.metadata["chunks"] == len(chunks) and read.metadata["chunks"] == -(-total // DEFAULT_ROWS_PER_CHUNK)
    assert stream.metadata["bytes_read"] > 0 and stream.metadata["query"].endswith('ORDER BY "entity" NULLS LAST, "ts"')
    assert {"source", "database", "table", "seconds"} <= set(stream.metadata)


@pytest.mark.parametrize("table", ["aware", "naive"])
def test_read_window_equals_the_rows(database, table):
    frame = DuckDBTableReader(database, _spec(table)).read_window(START, END).frame
    expected = _expected()
    assert frame["ts"].min() == pd.Timestamp(START) and frame["ts"].max() < pd.Timestamp(END)  # half open
    pd.testing.assert_frame_equal(frame[["entity", "ts", "f", "cat"]], expected[["entity", "ts", "f", "cat"]])
    # NULLs in INTEGER / BOOLEAN: pandas' Arrow conversion gives float64 / object, as it always did
    assert frame["n"].dtype == np.float64 and frame["flag"].dtype == object
    assert frame["n"].isna().sum() == expected["n"].isna().sum() > 0
    np.testing.assert_array_equal(frame["n"].fillna(99).to_numpy(), expected["n"].fillna(99).astype(float).to_numpy())
    assert normalise_frame(frame.sample(frac=1.0, random_state=1), _spec(table)).equals(frame)


def test_aware_and_naive_tables_read_the_same(database):
    for rows_per_chunk in (5, 1000):
        aware = list(DuckDBTableReader(database, _spec("aware")).iter_window(START, END, rows_per_chunk))
        naive = list(DuckDBTableReader(database, _spec("naive")).iter_window(START, END, rows_per_chunk))
        assert len(aware) == len(naive)
        for a, b in zip(aware, naive, strict=True):
            pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("table", ["aware", "naive"])
def test_empty_window_yields_no_chunk(database, table):
    reader = DuckDBTableReader(database, _spec(table))
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)
    with reader.iter_window(start, end, rows_per_chunk=3) as stream:
        assert list(stream) == []
        empty = stream.empty_frame()
    assert stream.metadata["rows"] == 0 and stream.metadata["chunks"] == 0
    assert empty.empty and list(empty.columns) == _spec(table).columns == stream.columns
    assert str(empty["ts"].dtype) == "datetime64[ns, UTC]" and empty["f"].dtype == np.float64
    read = reader.read_window(start, end)
    pd.testing.assert_frame_equal(read.frame, empty)
    assert read.metadata["rows"] == 0 and read.metadata["chunks"] == 0
    # the schema can be asked for before iterating (it runs the query)
    fresh = reader.iter_window(start, end)
    pd.testing.assert_frame_equal(fresh.empty_frame(), empty)
    assert list(fresh) == []


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10", None])
def test_rows_per_chunk_is_validated(database, bad):
    reader = DuckDBTableReader(database, _spec("aware"))
    with pytest.raises(ValueError, match="rows_per_chunk"):
        reader.iter_window(START, END, rows_per_chunk=bad)


def test_early_stop_releases_a_shared_connection(database):
    """A consumer that stops (or fails) after one chunk: the query's reader is closed, and the same
    connection (as the Dagster resource shares one) serves the next window."""
    connection = duckdb.connect(database, read_only=True)
    try:
        reader = DuckDBTableReader(database, _spec("aware"), connect=lambda: nullcontext(connection))
        with reader.iter_window(START, END, rows_per_chunk=10) as stream:
            first = next(stream)
        assert len(first) == 10 and stream.metadata["chunks"] == 1 and stream.metadata["rows"] == 10
        assert list(stream) == []  # closed: nothing more
        with (
            pytest.raises(RuntimeError, match="consumer failed"),
            reader.iter_window(START, END, rows_per_chunk=10) as stream,
        ):
            for _ in stream:
                raise RuntimeError("consumer failed")
        read = reader.read_window(START, END)
        # same values; dtypes may differ: the first 10 rows hold no NULL flag (bool), the window does (object)
        pd.testing.assert_frame_equal(read.frame.iloc[:10], first, check_dtype=False)
        assert len(read.frame) == len(_expected())
        assert connection.execute("SELECT 42").fetchone() == (42,)
    finally:
        connection.close()


def test_query_runs_only_when_iterated(database, tmp_path):
    opened = []

    def connect():
        opened.append(1)
        return duckdb.connect(database, read_only=True)

    reader = DuckDBTableReader(database, _spec("aware"), connect=connect)
    reader._timestamp_is_aware = True  # skip the schema lookup: count only the window query
    stream = reader.iter_window(START, END, rows_per_chunk=50)
    assert opened == []
    assert len(next(stream)) == 50 and opened == [1]
    stream.close()


# --- the re-chunking helper ---------------------------------------------------------------------------


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 4, 10, 100])
def test_rechunk_arrow_batches(rows_per_chunk):
    values = np.arange(23)
    sizes, batches, offset = [5, 0, 1, 7, 2, 8], [], 0
    for size in sizes:
        batches.append(pa.RecordBatch.from_pydict({"v": values[offset : offset + size]}))
        offset += size
    groups = list(rechunk(iter(batches), rows_per_chunk))
    assert all(isinstance(g, pa.Table) for g in groups)
    assert [g.num_rows for g in groups[:-1]] == [rows_per_chunk] * (len(groups) - 1)
    assert 1 <= groups[-1].num_rows <= rows_per_chunk
    np.testing.assert_array_equal(np.concatenate([g.column("v").to_numpy() for g in groups]), values)


def test_rechunk_pandas_pieces_and_nothing():
    pieces = [pd.DataFrame({"v": range(a, b)}) for a, b in ((0, 4), (4, 4), (4, 9), (9, 10))]
    groups = list(rechunk(pieces, 3))
    assert [len(g) for g in groups] == [3, 3, 3, 1]
    assert pd.concat(groups)["v"].tolist() == list(range(10))
    assert list(rechunk([], 3)) == [] and list(rechunk([pa.RecordBatch.from_pydict({"v": []})], 3)) == []
    with pytest.raises(ValueError, match="rows_per_chunk"):
        list(rechunk(pieces, 0))


def test_memory_limit_too_small_names_the_setting(tmp_path):
    """DuckDB refusing the ordered read within its memory_limit: a MemoryError naming the limit, the table, the
    window and both settings to change (not DuckDB's bare message)."""
    path = str(tmp_path / "big.duckdb")
    with duckdb.connect(path) as connection:
        connection.execute(
            "CREATE TABLE t AS SELECT 'entity_' || (i % 5000)::VARCHAR AS entity, "
            "TIMESTAMPTZ '2024-03-01 00:00:00+00' + to_microseconds((random() * 86400e6)::BIGINT) AS ts, "
            "random() AS f, repeat('x', 40) AS pad FROM range(1000000) r(i)"
        )
    spec = TableSpec(
        table="t", timestamp_column="ts", entity_column="entity", feature_columns=("f",), extra_columns=("pad",)
    )
    connection = duckdb.connect(path, read_only=True, config={"memory_limit": "4MB"})
    try:
        reader = DuckDBTableReader(path, spec, connect=lambda: nullcontext(connection))
        with pytest.raises(
            MemoryError,
            match=r"memory_limit \(3\.8 MiB\) with \d+ threads?( \(after the configured threads had too\))?, sorting t "
            r"from 2024-03-01.*raise the DuckDB source's memory_limit",
        ):
            list(reader.iter_window(START, END, rows_per_chunk=100_000))
    finally:
        connection.close()
