"""Split and cyclical features computed INSIDE BigQuery for one partition window.

``raw_chunk -> split_data -> cyclical_features`` pulls every raw row of a window
through Python, assigns its split (``features.split.assign_split``) and adds 8
sin/cos columns per datetime column (``features.cyclical.cyclical_features``).
Pushdown produces the same frame with one BigQuery query: the split is BigQuery's
own ``MOD(ABS(FARM_FINGERPRINT(CAST(key AS STRING))), 100)`` bucket (the idiom
``assign_split`` reproduces in Python, so the labels are identical), and the
calendar features are ``EXTRACT``-ed in SQL with the same true periods:

===========  ==================================================================
feature      phase in SQL (``d`` = the wall-clock DATETIME of the column)
===========  ==================================================================
hour         ``EXTRACT(HOUR FROM d) / 24``
dayofweek    ``MOD(EXTRACT(DAYOFWEEK FROM d) + 5, 7) / 7`` (BigQuery: 1 = Sunday;
             here Monday = 0, Sunday = 6)
day          ``(EXTRACT(DAY FROM d) - 1) / EXTRACT(DAY FROM LAST_DAY(DATE(d)))``
month        ``(EXTRACT(MONTH FROM d) - 1) / 12``
===========  ==================================================================

and each feature is ``SIN(2 pi phase), COS(2 pi phase)`` in FLOAT64 (the local
computation is float64 rounded to its output dtype: equal to ~1e-7 in float32).

Two layers:

* ``pushdown_sql(spec, split_key, fractions)`` -- a pure function returning the
  BigQuery SQL (window bounds are the query parameters ``@start`` / ``@end``;
  identifiers validated and quoted by ``sql.py``). Run it with any BigQuery client
  (``client.query(sql, job_config=QueryJobConfig(query_parameters=...))``) or
  transpile it (the tests run it on DuckDB via sqlglot and on the bqemulator emulator).
* ``iter_window_pushdown(session, spec, start, end, split_key=..., rows_per_chunk=...)``
  -- runs it through a ``bigframes`` session (``session.read_gbq_query``) and streams
  the result as a ``WindowStream`` of pandas chunks; ``read_window_pushdown`` returns
  their concatenation as a ``WindowRead`` or, with ``to_pandas=False``, the bigframes
  DataFrame, which stays in BigQuery for further bigframes work.

Row order: the SQL ends with ``ORDER BY entity NULLS LAST, ts``. Through the BigQuery
client (``BigQueryPushdownReader``) that order arrives as is (google-cloud-bigquery
reads an ``ORDER BY`` result over one Storage API stream). bigframes does NOT keep it:
``read_gbq_query`` reads the query's destination (temporary) table, and a table has no
row order (bigframes orders it by a row hash). So the bigframes path sorts again in
bigframes (``sort_values``, computed by BigQuery: one more query, which scans the
window's result, not the source table) and streams that ordered result with
``DataFrame.to_pandas_batches(page_size=rows_per_chunk)`` (bigframes 2.x: executed
with ``ordered=True``).

When to use pushdown, what it costs and how to partition the table: docs/bigquery.md (Pushdown).
Results go through a temporary table; ``allow_large_results=False`` (the default here) keeps
BigQuery's ~10 GB per-query result limit, which a daily window of a terabyte table stays well
under. bigframes 2.x ignores query parameters in the dry run it makes when
``allow_large_results=True``, so that mode is refused here rather than failing inside bigframes.

Each partition is one independent query, so days can run in separate runs at once (docs/scale.md:
the run queue's limits and BigQuery's concurrent-query quota). Give each process its own bigframes
``Session`` (``bigframes.connect(...)``; the module-level ``bigframes.pandas`` session is
process-global and must not be shared across threads) and close it at the end of the op
(``session.close()`` drops its temporary tables). Re-materialising a partition reruns its query and
yields the same split labels (the hash is deterministic): no state is shared between partitions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..features.split import split_sql_expression
from ..names import CYCLICAL_SUFFIXES, DEFAULT_FRACTIONS
from .base import (
    DEFAULT_ROWS_PER_CHUNK,
    TableSpec,
    WindowRead,
    WindowStream,
    as_utc,
    check_rows_per_chunk,
    validate_columns,
)
from .bigquery import BigQueryTableReader
from .sql import IdentifierError, check_column, order_by_sql, parse_bigquery_table, quote_column

TWO_PI = "6.283185307179586"  # repr(2 * math.pi): exact float64 literal
_TIMEZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$|^[+-]\d{2}(:?\d{2})?$")
_CTE = "eh_window"


def _local_datetime(column_sql: str, bigquery_type: str, timezone: str) -> str:
    """SQL for the wall-clock DATETIME of a TIMESTAMP / DATETIME / DATE column."""
    kind = bigquery_type.upper()
    if kind == "TIMESTAMP":
        return f"DATETIME({column_sql}, '{timezone}')"
    if kind == "DATETIME":
        return column_sql
    if kind == "DATE":
        return f"DATETIME({column_sql})"
    raise TypeError(f"cyclical features need a TIMESTAMP, DATETIME or DATE column, got {bigquery_type}")


def cyclical_sql(local: str, prefix: str) -> list[str]:
    """The 8 ``expr AS `prefix_suffix``` select items for a wall-clock DATETIME expression ``local``."""
    phases = {
        "hour": f"EXTRACT(HOUR FROM {local}) / 24",
        "dayofweek": f"MOD(EXTRACT(DAYOFWEEK FROM {local}) + 5, 7) / 7",
        "day": f"(EXTRACT(DAY FROM {local}) - 1) / EXTRACT(DAY FROM LAST_DAY(DATE({local})))",
        "month": f"(EXTRACT(MONTH FROM {local}) - 1) / 12",
    }
    items = []
    for suffix in CYCLICAL_SUFFIXES:
        func, part = suffix.split("_", 1)
        items.append(f"{func.upper()}({TWO_PI} * ({phases[part]})) AS {quote_column(f'{prefix}_{suffix}')}")
    return items


def pushdown_columns(spec: TableSpec, split_column: str = "split") -> list[str]:
    """The pushdown result's columns, in order: ``spec.columns``, the split, 8 cyclical columns per datetime column."""
    outputs = [*spec.columns, split_column]
    for column in spec.resolved_datetime_columns:
        outputs += [f"{column}_{suffix}" for suffix in CYCLICAL_SUFFIXES]
    return outputs


def pushdown_sql(
    spec: TableSpec,
    split_key: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    split_column: str = "split",
    timezone: str = "UTC",
    column_types: Mapping[str, str] | None = None,
) -> str:
    """BigQuery SQL: the window's ``spec.columns``, its split, and 8 cyclical features per datetime column.

    Parameters
    ----------
    spec : TableSpec
        Table and columns; ``spec.datetime_columns`` get the cyclical features,
        named ``{column}_sin_hour`` ... ``{column}_cos_month``.
    split_key : str
        Column hashed for the split (``CAST(key AS STRING)`` then ``FARM_FINGERPRINT``).
    fractions : (train, validation, test)
        As for ``features.split.assign_split``.
    split_column : str
        Name of the label column ("train" / "validation" / "test").
    timezone : str
        Wall clock for TIMESTAMP columns (a tz database name or ``+HH:MM``).
    column_types : mapping, optional
        BigQuery types of the datetime columns (TIMESTAMP when not given).

    Returns
    -------
    str
        One SELECT with the parameters ``@start`` and ``@end`` (TIMESTAMP),
        ``WHERE ts >= @start AND ts < @end``, ordered by (entity NULLS LAST, timestamp).
    """
    project, dataset, name = parse_bigquery_table(spec.table)
    if not isinstance(timezone, str) or not _TIMEZONE.match(timezone):
        raise IdentifierError(f"time zone {timezone!r} is not a tz database name or a +HH:MM offset")
    check_column(split_key)
    check_column(split_column)
    columns = list(spec.columns)
    types = dict(column_types or {})

    outputs = pushdown_columns(spec, split_column)
    clashes = sorted({c for c in outputs if outputs.count(c) > 1})
    if clashes:
        raise ValueError(f"pushdown output columns would repeat {clashes}: rename split_column or the source columns")

    inner = [quote_column(c) for c in columns]
    if split_key not in columns:
        inner.append(quote_column(split_key))
    locals_ = {}
    for i, column in enumerate(spec.resolved_datetime_columns):
        locals_[column] = f"eh_local_{i}"
        inner.append(
            f"{_local_datetime(quote_column(column), types.get(column, 'TIMESTAMP'), timezone)} "
            f"AS {quote_column(locals_[column])}"
        )

    outer = [quote_column(c) for c in columns]
    outer.append(f"{split_sql_expression(quote_column(split_key), fractions)} AS {quote_column(split_column)}")
    for column in spec.resolved_datetime_columns:
        outer += cyclical_sql(quote_column(locals_[column]), column)

    ts = quote_column(spec.timestamp_column)
    order = order_by_sql(spec.order_by, spec.timestamp_column, quote_column)
    return (
        f"WITH {_CTE} AS (\n"
        f"  SELECT {', '.join(inner)}\n"
        f"  FROM `{project}.{dataset}.{name}`\n"
        f"  WHERE {ts} >= @start AND {ts} < @end\n"
        f")\n"
        f"SELECT\n  " + ",\n  ".join(outer) + "\n"
        f"FROM {_CTE}\n"
        f"ORDER BY {order}"
    )


def query_parameters_api_repr(start: datetime, end: datetime) -> dict:
    """``{"parameterMode": "NAMED", "queryParameters": [...]}`` for ``@start`` / ``@end`` (a job's ``query`` config)."""

    def param(name, value):
        stamp = as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
        return {"name": name, "parameterType": {"type": "TIMESTAMP"}, "parameterValue": {"value": stamp}}

    return {"parameterMode": "NAMED", "queryParameters": [param("start", start), param("end", end)]}


def _check_pushdown(
    spec: TableSpec,
    start: datetime,
    end: datetime,
    split_key: str,
    column_types: Mapping[str, str] | None,
    allow_large_results: bool,
):
    if allow_large_results:
        raise ValueError(
            "allow_large_results=True is not supported: bigframes' dry run for it drops the "
            "@start/@end query parameters; keep windows under BigQuery's result size limit"
        )
    lower, upper = as_utc(start), as_utc(end)
    if upper < lower:
        raise ValueError(f"window end {upper} is before its start {lower}")
    if column_types is not None:
        validate_columns(spec, column_types, "bigquery")
        if split_key not in column_types:
            raise ValueError(f"table {spec.table!r} has no column {split_key!r} (split_key)")
    return lower, upper


def iter_window_pushdown(
    session: Any,
    spec: TableSpec,
    start: datetime,
    end: datetime,
    *,
    split_key: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_column: str = "split",
    timezone: str = "UTC",
    column_types: Mapping[str, str] | None = None,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
) -> WindowStream:
    """``pushdown_sql`` for ``[start, end)`` through a bigframes session, as chunks of ``rows_per_chunk`` rows.

    ``session`` is a ``bigframes.session.Session`` (or the ``bigframes.pandas`` module for the
    global session). ``column_types`` (name -> BigQuery type) lets the configured columns and
    ``split_key`` be checked before the query; pass ``BigQueryTableReader(...).column_types()``.

    At the first chunk: ``session.read_gbq_query(sql)``, then ``sort_values([entity, ts],
    na_position="last")`` on the bigframes DataFrame (its query result has lost the SQL's
    order, see the module docstring) and ``to_pandas_batches(page_size=rows_per_chunk)``,
    regrouped into exact chunks. Column types are bigframes' (nullable pandas / Arrow
    dtypes, the same in every chunk); the timestamp column is ``datetime64[ns, UTC]``. An
    empty window yields no chunk (``base.WindowStream``).
    """
    rows_per_chunk = check_rows_per_chunk(rows_per_chunk)
    lower, upper = _check_pushdown(spec, start, end, split_key, column_types, False)
    sql = pushdown_sql(
        spec, split_key, fractions, split_column=split_column, timezone=timezone, column_types=column_types
    )

    def produce(metadata: dict):
        frame = session.read_gbq_query(
            sql, configuration={"query": query_parameters_api_repr(lower, upper)}, allow_large_results=False
        )
        job = getattr(frame, "_query_job", None)
        metadata.update(
            job_id=getattr(job, "job_id", None),
            bytes_processed=getattr(job, "total_bytes_processed", None),
            bytes_billed=getattr(job, "total_bytes_billed", None),
        )
        ordered = frame.sort_values(spec.order_by, na_position="last")
        batches = ordered.to_pandas_batches(page_size=rows_per_chunk, allow_large_results=False)
        metadata["ordered_read_bytes_processed"] = getattr(batches, "total_bytes_processed", None)
        batches = iter(batches)
        try:
            first = next(batches, None)  # bigframes yields at least one (maybe empty) frame
            if first is None:
                yield frame_schema(ordered)
            else:
                yield first.iloc[:0]
                yield first
            yield from batches
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    return WindowStream(
        spec,
        pushdown_columns(spec, split_column),
        rows_per_chunk,
        produce,
        {
            "source": "bigquery-pushdown",
            "table": spec.table,
            "rows": 0,
            "job_id": None,
            "bytes_processed": None,
            "bytes_billed": None,
            "seconds": 0.0,
            "query": sql,
        },
    )


def frame_schema(frame: Any):
    """An empty pandas frame with a (bigframes) DataFrame's columns and dtypes."""
    import pandas as pd

    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in frame.dtypes.items()})


def read_window_pushdown(
    session: Any,
    spec: TableSpec,
    start: datetime,
    end: datetime,
    *,
    split_key: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_column: str = "split",
    timezone: str = "UTC",
    column_types: Mapping[str, str] | None = None,
    to_pandas: bool = True,
    allow_large_results: bool = False,
):
    """Run ``pushdown_sql`` for ``[start, end)`` through a bigframes session.

    Returns a ``WindowRead`` -- the concatenation of ``iter_window_pushdown``'s chunks: rows in
    (entity NULLS LAST, timestamp) order, timestamp UTC -- when ``to_pandas``; otherwise the
    bigframes DataFrame of the query (order not guaranteed: bigframes reads query results
    from a table, which has no row order).
    """
    lower, upper = _check_pushdown(spec, start, end, split_key, column_types, allow_large_results)
    if to_pandas:
        return iter_window_pushdown(
            session,
            spec,
            lower,
            upper,
            split_key=split_key,
            fractions=fractions,
            split_column=split_column,
            timezone=timezone,
            column_types=column_types,
        ).read()
    sql = pushdown_sql(
        spec, split_key, fractions, split_column=split_column, timezone=timezone, column_types=column_types
    )
    return session.read_gbq_query(
        sql, configuration={"query": query_parameters_api_repr(lower, upper)}, allow_large_results=False
    )


class BigQueryPushdownReader:
    """A ``TableReader`` whose one query per window also computes the split and the cyclical features.

    Built on ``BigQueryTableReader`` (same client, parameters, paging and metadata); only the
    SQL differs: ``pushdown_sql`` for the table's real column types. No bigframes needed.
    The frames it returns carry ``split_column`` and the 8 cyclical columns per datetime column
    (float64, computed by BigQuery).
    """

    def __init__(
        self,
        client: Any,
        spec: TableSpec,
        *,
        split_key: str,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        split_column: str = "split",
        timezone: str = "UTC",
        **reader_options,
    ):
        check_column(split_key)
        self.spec = spec
        self.split_key, self.fractions, self.split_column, self.timezone = (
            split_key,
            tuple(fractions),
            split_column,
            timezone,
        )
        self._reader = BigQueryTableReader(client, spec, **reader_options)

    def column_types(self) -> Mapping[str, str]:
        return self._reader.column_types()

    dialect = "bigquery"

    def validate(self, **settings) -> None:
        """Check the columns, the ``settings`` that name columns (``BigQueryTableReader.validate``) and the
        split key against the schema, then build the pushdown SQL."""
        self._reader.validate(**settings)
        types = self._reader.column_types()
        if self.split_key not in types:
            raise ValueError(f"table {self.spec.table!r} has no column {self.split_key!r} (split_key)")
        self._reader._query = pushdown_sql(
            self.spec,
            self.split_key,
            self.fractions,
            split_column=self.split_column,
            timezone=self.timezone,
            column_types=types,
        )
        self._reader._columns = pushdown_columns(self.spec, self.split_column)

    def iter_window(self, start: datetime, end: datetime, rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK) -> WindowStream:
        """The window's pushdown rows as chunks of ``rows_per_chunk`` rows (``BigQueryTableReader.iter_window``
        with ``pushdown_sql``: same paging, order and metadata)."""
        check_rows_per_chunk(rows_per_chunk)
        if not self._reader._validated:
            self.validate()
        stream = self._reader.iter_window(start, end, rows_per_chunk)
        stream.metadata.update(source="bigquery-pushdown", split_key=self.split_key)
        return stream

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """The concatenation of ``iter_window``'s chunks."""
        return self.iter_window(start, end).read()


class BigFramesPushdownReader:
    """The same pushdown through a bigframes ``Session`` (``read_window_pushdown``), for teams that
    already run bigframes: its Storage Read download and session options apply. Schema checks use
    the session's own BigQuery client."""

    def __init__(
        self,
        session: Any,
        spec: TableSpec,
        *,
        split_key: str,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        split_column: str = "split",
        timezone: str = "UTC",
    ):
        check_column(split_key)
        parse_bigquery_table(spec.table)
        self.session, self.spec = session, spec
        self.split_key, self.fractions, self.split_column, self.timezone = (
            split_key,
            tuple(fractions),
            split_column,
            timezone,
        )
        self._column_types: dict[str, str] | None = None

    def column_types(self) -> Mapping[str, str]:
        if self._column_types is None:
            table = self.session.bqclient.get_table(self.spec.table)
            self._column_types = {field.name: field.field_type for field in table.schema}
        return self._column_types

    dialect = "bigquery"

    def validate(self, **settings) -> None:
        """Check the columns and the ``settings`` that name columns against the schema (``schema.py``)."""
        validate_columns(self.spec, self.column_types(), self.dialect, **settings)

    def iter_window(self, start: datetime, end: datetime, rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK) -> WindowStream:
        """The window's pushdown rows as chunks of ``rows_per_chunk`` rows: ``iter_window_pushdown``
        (bigframes re-sorts the result and streams it with ``to_pandas_batches``)."""
        return iter_window_pushdown(
            self.session,
            self.spec,
            start,
            end,
            split_key=self.split_key,
            fractions=self.fractions,
            split_column=self.split_column,
            timezone=self.timezone,
            column_types=self.column_types(),
            rows_per_chunk=rows_per_chunk,
        )

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """The concatenation of ``iter_window``'s chunks."""
        return self.iter_window(start, end).read()


__all__ = [
    "BigQueryPushdownReader",
    "BigFramesPushdownReader",
    "pushdown_sql",
    "pushdown_columns",
    "cyclical_sql",
    "query_parameters_api_repr",
    "iter_window_pushdown",
    "read_window_pushdown",
    "CYCLICAL_SUFFIXES",
]
