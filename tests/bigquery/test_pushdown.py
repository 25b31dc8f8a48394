"""Pushdown SQL (split + cyclical features in BigQuery) equals the local computation.

``pushdown_sql`` is executed two ways, offline, on the same rows:

* on the bqemulator BigQuery emulator (GoogleSQL as written, with ``@start``/``@end``
  TIMESTAMP parameters);
* on DuckDB after ``sqlglot.transpile(read="bigquery", write="duckdb")``, with a
  ``FARM_FINGERPRINT`` UDF from pyfarmhash. sqlglot copies ``EXTRACT(DAYOFWEEK ...)``
  verbatim although BigQuery counts 1 = Sunday .. 7 and DuckDB 0 = Sunday .. 6; the
  test rewrites that one node (``_bigquery_dayofweek_for_duckdb``), it is a
  transpiler gap, not part of the SQL under test.

Each result is compared with ``features.split.assign_split`` (labels equal) and
``features.cyclical.cyclical_features`` (float64, to 1e-6) on the same rows.

Not run offline: ``read_window_pushdown`` / ``iter_window_pushdown`` through a real bigframes session. A
bigframes Session needs BigQuery: against bqemulator 1.4.0 it fails while starting
(its clock sync runs ``SELECT CURRENT_TIMESTAMP() AS current_timestamp`` through
``query_and_wait``; the emulator fails that query -- DuckDB binder error on the
alias -- and ``query_and_wait`` hands back an empty result, so bigframes stops with
``StopIteration``). bigframes does not compile this SQL (it is passed through as
written), so there is no bigframes-compiled SQL to run here. What is tested is the
calls bigframes receives (a recording stand-in for the session and its DataFrame:
``read_gbq_query``, ``sort_values``, ``to_pandas_batches``), not bigframes: in particular
that bigframes' ``to_pandas_batches`` keeps the ``sort_values`` order is bigframes' promise
(it executes with ``ordered=True``), not shown here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emberharmony_core.features.cyclical import CYCLICAL_SUFFIXES as LOCAL_SUFFIXES
from emberharmony_core.features.cyclical import cyclical_features
from emberharmony_core.features.split import assign_split
from emberharmony_core.ops import get_backend
from emberharmony_core.sources.base import TableSpec, normalise_frame
from emberharmony_core.sources.pushdown import (
    CYCLICAL_SUFFIXES,
    iter_window_pushdown,
    pushdown_columns,
    pushdown_sql,
    query_parameters_api_repr,
    read_window_pushdown,
)
from emberharmony_core.sources.sql import IdentifierError

TABLE = "events"
START = datetime(2023, 1, 1, tzinfo=UTC)
END = datetime(2024, 12, 31, tzinfo=UTC)
FEATURE_COLUMNS = [f"ts_{s}" for s in CYCLICAL_SUFFIXES]


def _frame() -> pd.DataFrame:
    """Rows over 2023-2024 (leap February, month and year ends, every hour and weekday)."""
    stamps = list(pd.date_range("2023-01-01", "2024-12-31", freq="7h13min", tz="UTC"))
    stamps += [
        pd.Timestamp(s, tz="UTC")
        for s in (
            "2023-02-28 23:59:59.999999",
            "2024-02-29 12:00:00",
            "2024-03-01 00:00:00",
            "2023-12-31 23:30:00",
            "2024-01-01 00:00:00",
            "2024-03-10 07:30:00",
            "2024-11-03 05:30:00",
            "2024-12-30 23:00:00",
        )
    ]
    n = len(stamps)
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "entity": [f"user-{i % 37}" for i in range(n)],
            "ts": pd.DatetimeIndex(stamps).astype("datetime64[ns, UTC]"),
            "uid": (np.arange(n) * 7919) % 1000 - 300,  # negative and positive integer keys
            "x": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        }
    )
    return normalise_frame(frame, _spec("p"))


def _spec(table: str) -> TableSpec:
    return TableSpec(
        table=table, timestamp_column="ts", entity_column="entity", feature_columns=("x",), extra_columns=("uid",)
    )


def _local(frame: pd.DataFrame, key: str, fractions, tz: str = "UTC") -> pd.DataFrame:
    """The local computation: assign_split + cyclical_features (float64) on the wall clock of ``tz``."""
    out = frame.copy()
    out["split"] = assign_split(out[key], fractions)
    local = pd.DataFrame({"ts": out["ts"].dt.tz_convert(tz)})
    feats = cyclical_features(local, "ts", get_backend("numpy"), dtype="float64")
    for suffix in LOCAL_SUFFIXES:
        out[f"ts_{suffix}"] = feats[f"ts_{suffix}"].to_numpy()
    return out


def _compare(result: pd.DataFrame, frame: pd.DataFrame, key: str, fractions, tz: str = "UTC") -> None:
    expected = _local(frame, key, fractions, tz)
    assert list(result.columns) == ["entity", "ts", "x", "uid", "split", *FEATURE_COLUMNS]
    assert len(result) == len(expected) > 0
    pd.testing.assert_frame_equal(result[["entity", "ts", "x"]], expected[["entity", "ts", "x"]])
    assert (result["uid"].to_numpy() == expected["uid"].to_numpy()).all()
    assert (result["split"].to_numpy() == expected["split"].to_numpy()).all()
    assert set(result["split"]) == {"train", "validation", "test"}
    got = result[FEATURE_COLUMNS].to_numpy(dtype=np.float64)
    want = expected[FEATURE_COLUMNS].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# --- the pure SQL builder ------------------------------------------------------------------------


def test_pushdown_sql_shape():
    sql = pushdown_sql(_spec("proj-123.ds.events"), "entity", (0.7, 0.2, 0.1))
    assert "FROM `proj-123.ds.events`" in sql and "`ts` >= @start AND `ts` < @end" in sql
    assert "MOD(ABS(FARM_FINGERPRINT(CAST(`entity` AS STRING))), 100) < 70 THEN 'train'" in sql
    assert "< 90 THEN 'validation' ELSE 'test' END AS `split`" in sql
    assert "MOD(EXTRACT(DAYOFWEEK FROM `eh_local_0`) + 5, 7) / 7" in sql  # BigQuery 1=Sunday -> Monday=0
    assert "EXTRACT(DAY FROM LAST_DAY(DATE(`eh_local_0`)))" in sql
    assert "DATETIME(`ts`, 'UTC')" in sql and sql.rstrip().endswith("ORDER BY `entity` NULLS LAST, `ts`")
    for name in FEATURE_COLUMNS:
        assert f"AS `{name}`" in sql
    assert "*" not in sql.replace("6.283185307179586 * (", "")


def test_pushdown_sql_column_types_and_timezone():
    spec = TableSpec(
        table="proj-123.ds.events", timestamp_column="ts", feature_columns=("x",), datetime_columns=("ts", "d", "dt")
    )
    sql = pushdown_sql(
        spec, "ts", column_types={"ts": "TIMESTAMP", "d": "DATE", "dt": "DATETIME"}, timezone="Europe/Paris"
    )
    assert "DATETIME(`ts`, 'Europe/Paris') AS `eh_local_0`" in sql
    assert "DATETIME(`d`) AS `eh_local_1`" in sql and "`dt` AS `eh_local_2`" in sql
    assert "AS `d_cos_month`" in sql and "AS `dt_sin_hour`" in sql
    with pytest.raises(TypeError, match="STRING"):
        pushdown_sql(spec, "ts", column_types={"d": "STRING"})


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"split_key": "id; DROP TABLE t"}, IdentifierError),
        ({"split_key": "a`b"}, IdentifierError),
        ({"split_column": "s) --"}, IdentifierError),
        ({"timezone": "UTC'); DROP TABLE t; --"}, IdentifierError),
        ({"split_column": "x"}, ValueError),  # clashes with a source column
        ({"fractions": (0.5, 0.5, 0.5)}, ValueError),
    ],
)
def test_pushdown_sql_rejects_bad_input(kwargs, error):
    arguments = {"split_key": "entity", **kwargs}
    with pytest.raises(error):
        pushdown_sql(_spec("proj-123.ds.events"), **arguments)
    with pytest.raises(IdentifierError):
        pushdown_sql(_spec("a.b"), "entity")


# --- executed on the emulator ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def events(bq_client, bq_dataset) -> tuple[str, pd.DataFrame]:
    from google.cloud import bigquery

    frame = _frame()
    name = f"{bq_dataset}.{TABLE}"
    schema = [
        bigquery.SchemaField("entity", "STRING"),
        bigquery.SchemaField("ts", "TIMESTAMP"),
        bigquery.SchemaField("uid", "INT64"),
        bigquery.SchemaField("x", "FLOAT64"),
    ]
    bq_client.delete_table(name, not_found_ok=True)
    bq_client.create_table(bigquery.Table(name, schema=schema))
    rows = [
        {"entity": e, "ts": t.isoformat(), "uid": int(u), "x": None if np.isnan(x) else float(x)}
        for e, t, u, x in zip(frame["entity"], frame["ts"], frame["uid"], frame["x"], strict=True)
    ]
    assert bq_client.insert_rows_json(name, rows) == []
    return name, frame


def _run_on_emulator(client, sql, start, end) -> pd.DataFrame:
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
            bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
        ]
    )
    table = client.query(sql, job_config=config).result().to_arrow(create_bqstorage_client=False)
    return normalise_frame(table.to_pandas(), _spec("p"))


@pytest.mark.parametrize("key,fractions", [("entity", (0.8, 0.1, 0.1)), ("uid", (0.6, 0.25, 0.15))])
def test_pushdown_on_emulator_equals_local(bq_client, events, key, fractions):
    name, frame = events
    result = _run_on_emulator(bq_client, pushdown_sql(_spec(name), key, fractions), START, END)
    _compare(result, frame, key, fractions)


def test_pushdown_on_emulator_one_window_and_timezone(bq_client, events):
    name, frame = events
    start, end = datetime(2024, 2, 28, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC)
    window = frame[(frame["ts"] >= start) & (frame["ts"] < end)].reset_index(drop=True)
    sql = pushdown_sql(_spec(name), "entity", timezone="America/New_York")  # DST starts 2024-03-10
    result = _run_on_emulator(bq_client, sql, start, end)
    _compare(result, window, "entity", (0.8, 0.1, 0.1), tz="America/New_York")


# --- executed on DuckDB after transpiling -----------------------------------------------------------


def _bigquery_dayofweek_for_duckdb(expression):
    """EXTRACT(DAYOFWEEK FROM x) -> (EXTRACT(DAYOFWEEK FROM x) + 1): BigQuery 1..7 from DuckDB 0..6."""
    from sqlglot import exp

    if isinstance(expression, exp.Extract) and expression.this.name.upper() == "DAYOFWEEK":
        return exp.Paren(this=exp.Add(this=expression.copy(), expression=exp.Literal.number(1)))
    return expression


def _run_on_duckdb(sql: str, frame: pd.DataFrame, start, end) -> pd.DataFrame:
    import duckdb
    import farmhash
    import sqlglot
    from duckdb.func import FunctionNullHandling

    tree = sqlglot.parse_one(sql, read="bigquery").transform(_bigquery_dayofweek_for_duckdb)
    duck_sql = tree.sql(dialect="duckdb")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.create_function(
            "farm_fingerprint",
            lambda s: int(np.uint64(farmhash.fingerprint64(s)).astype(np.int64)),
            ["VARCHAR"],
            "BIGINT",
            null_handling=FunctionNullHandling.SPECIAL,
        )
        con.execute("ATTACH ':memory:' AS \"test-project\"")
        con.execute('CREATE SCHEMA "test-project".ds')
        con.register("frame_view", frame)
        con.execute('CREATE TABLE "test-project".ds.events AS SELECT * FROM frame_view')
        table = con.sql(duck_sql, params={"start": start, "end": end}).to_arrow_table()
    finally:
        con.close()
    return normalise_frame(table.to_pandas(), _spec("p"))


@pytest.mark.parametrize(
    "key,fractions,tz",
    [
        ("entity", (0.8, 0.1, 0.1), "UTC"),
        ("uid", (0.5, 0.3, 0.2), "UTC"),
        ("entity", (0.8, 0.1, 0.1), "Asia/Kolkata"),
    ],
)
def test_pushdown_transpiled_to_duckdb_equals_local(key, fractions, tz):
    frame = _frame()
    sql = pushdown_sql(_spec("test-project.ds.events"), key, fractions, timezone=tz)
    _compare(_run_on_duckdb(sql, frame, START, END), frame, key, fractions, tz=tz)


# --- the bigframes call ------------------------------------------------------------------------------


class _BigFramesLike:
    """Stands in for a bigframes DataFrame: no row order (like a query result read from its table)
    until ``sort_values``; ``to_pandas_batches`` hands out uneven pages of at most ``page_size`` rows
    with bigframes' offset index, and at least one (maybe empty) frame, as bigframes 2.x does."""

    def __init__(self, frame: pd.DataFrame, calls: list, ordered: bool = False):
        self.frame, self.calls, self.ordered = frame, calls, ordered

    @property
    def dtypes(self):
        return self.frame.dtypes

    def to_pandas(self):
        return self.frame if self.ordered else self.frame.sample(frac=1.0, random_state=0)

    def sort_values(self, by, *, na_position="last", **kwargs):
        self.calls.append(("sort_values", list(by), {"na_position": na_position, **kwargs}))
        frame = self.to_pandas().sort_values(list(by), kind="stable", na_position=na_position)
        return _BigFramesLike(frame, self.calls, ordered=True)

    def to_pandas_batches(self, page_size=None, **kwargs):
        self.calls.append(("to_pandas_batches", page_size, kwargs))
        frame, sizes, offset, i = self.to_pandas(), [page_size, max(1, page_size // 3), 1], 0, 0
        frame = frame.set_axis(pd.RangeIndex(len(frame)) + 1000)  # not a fresh index
        if frame.empty:
            yield frame
        while offset < len(frame):
            yield frame.iloc[offset : offset + sizes[i % 3]]
            offset += sizes[i % 3]
            i += 1


class _RecordingSession:
    """Stands in for a bigframes Session: records read_gbq_query, answers with a precomputed frame."""

    def __init__(self, answer: pd.DataFrame):
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (query, keyword arguments)
        self.frame_calls: list[tuple[str, object, dict[str, Any]]] = []  # (method, argument, keyword arguments)

    def read_gbq_query(self, query, **kwargs):
        self.calls.append((query, kwargs))
        return _BigFramesLike(self.answer, self.frame_calls)  # BigQuery results carry no order


def test_read_window_pushdown_passes_parameters_and_normalises(events):
    name, frame = events
    expected = _local(frame, "entity", (0.8, 0.1, 0.1))
    session = _RecordingSession(expected)
    types = {"entity": "STRING", "ts": "TIMESTAMP", "uid": "INTEGER", "x": "FLOAT"}
    read = read_window_pushdown(session, _spec(name), START, END, split_key="entity", column_types=types)
    ((query, kwargs),) = session.calls
    assert query == pushdown_sql(_spec(name), "entity", column_types=types)
    assert kwargs["allow_large_results"] is False
    assert kwargs["configuration"] == {"query": query_parameters_api_repr(START, END)}
    params = kwargs["configuration"]["query"]["queryParameters"]
    assert [p["parameterValue"]["value"] for p in params] == [
        "2023-01-01 00:00:00.000000+00:00",
        "2024-12-31 00:00:00.000000+00:00",
    ]
    pd.testing.assert_frame_equal(read.frame, expected)  # re-sorted by (entity, ts) in "bigframes"
    assert read.metadata["rows"] == len(expected) and read.metadata["query"] == query
    assert session.frame_calls[0] == ("sort_values", ["entity", "ts"], {"na_position": "last"})
    assert session.frame_calls[1][0] == "to_pandas_batches"


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 1000])
def test_iter_window_pushdown_streams_sorted_chunks(events, rows_per_chunk):
    name, frame = events
    expected = _local(frame, "entity", (0.8, 0.1, 0.1))[pushdown_columns(_spec(name))]  # the SQL's column order
    session = _RecordingSession(expected)
    types = {"entity": "STRING", "ts": "TIMESTAMP", "uid": "INTEGER", "x": "FLOAT"}
    with iter_window_pushdown(
        session, _spec(name), START, END, split_key="entity", column_types=types, rows_per_chunk=rows_per_chunk
    ) as stream:
        assert session.calls == []  # nothing runs before the first chunk
        chunks = list(stream)
    assert session.frame_calls[1] == ("to_pandas_batches", rows_per_chunk, {"allow_large_results": False})
    assert [len(c) for c in chunks[:-1]] == [rows_per_chunk] * (len(chunks) - 1)
    assert 1 <= len(chunks[-1]) <= rows_per_chunk
    assert stream.columns == list(expected.columns)
    for chunk in chunks:
        assert list(chunk.columns) == stream.columns and isinstance(chunk.index, pd.RangeIndex)
        assert chunk.index.start == 0 and str(chunk["ts"].dtype) == "datetime64[ns, UTC]"
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), expected)
    assert stream.metadata["rows"] == len(expected) and stream.metadata["chunks"] == len(chunks)


def test_iter_window_pushdown_empty_window_yields_nothing(events):
    name, frame = events
    empty = _local(frame, "entity", (0.8, 0.1, 0.1)).iloc[:0]
    with iter_window_pushdown(_RecordingSession(empty), _spec(name), START, END, split_key="entity") as stream:
        assert list(stream) == []
        assert list(stream.empty_frame().columns) == list(empty.columns) and stream.empty_frame().empty
    assert stream.metadata["rows"] == 0 and stream.metadata["chunks"] == 0
    with pytest.raises(ValueError, match="rows_per_chunk"):
        iter_window_pushdown(_RecordingSession(empty), _spec(name), START, END, split_key="entity", rows_per_chunk=0)


def test_read_window_pushdown_checks_before_querying(events):
    name, _ = events
    session = _RecordingSession(pd.DataFrame())
    types = {"entity": "STRING", "ts": "TIMESTAMP", "uid": "INTEGER", "x": "FLOAT"}
    with pytest.raises(ValueError, match="'user_id' \\(split_key\\)"):
        read_window_pushdown(session, _spec(name), START, END, split_key="user_id", column_types=types)
    with pytest.raises(ValueError, match="'uid'"):
        read_window_pushdown(
            session,
            _spec(name),
            START,
            END,
            split_key="entity",
            column_types={k: v for k, v in types.items() if k != "uid"},
        )
    with pytest.raises(ValueError, match="allow_large_results"):
        read_window_pushdown(session, _spec(name), START, END, split_key="entity", allow_large_results=True)
    assert session.calls == []
