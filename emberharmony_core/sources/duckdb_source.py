"""The embedded default source: a table in a local DuckDB database file."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime
from typing import Callable, ContextManager, Mapping

import duckdb

from .base import TableSpec, WindowRead, as_utc, normalise_frame, validate_columns
from .sql import duckdb_table, duckdb_window_query


class DuckDBTableReader:
    """Reads one half-open time window at a time with a parameterised query.

    ``connect`` opens a connection (default: read-only on ``database``); the
    Dagster layer passes ``dagster_duckdb.DuckDBResource.get_connection``.
    """

    def __init__(self, database: str, spec: TableSpec,
                 connect: Callable[[], ContextManager[duckdb.DuckDBPyConnection]] | None = None):
        self.database = database
        self.spec = spec
        self._connect = connect or self._read_only_connection
        self._query = duckdb_window_query(spec.table, spec.columns, spec.timestamp_column, spec.order_by)
        self._timestamp_is_aware: bool | None = None
        duckdb_table(spec.table)  # validate early

    @contextmanager
    def _read_only_connection(self):
        connection = duckdb.connect(self.database, read_only=True)
        try:
            yield connection
        finally:
            connection.close()

    def column_types(self) -> Mapping[str, str]:
        schema, _, name = self.spec.table.rpartition(".")
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? AND (? = '' OR table_schema = ?) ORDER BY ordinal_position",
                [name, schema, schema],
            ).fetchall()
        if not rows:
            raise ValueError(f"DuckDB database {self.database!r} has no table {self.spec.table!r}")
        return dict(rows)

    def validate(self) -> None:
        """Check every configured column exists (raises ``ValueError`` naming the missing ones)."""
        validate_columns(self.spec, self.column_types())

    def _bound(self, stamp) -> datetime:
        """A window bound typed like the timestamp column: aware for TIMESTAMPTZ, naive UTC otherwise."""
        if self._timestamp_is_aware is None:
            kind = self.column_types().get(self.spec.timestamp_column, "")
            self._timestamp_is_aware = "TIME ZONE" in kind.upper() or kind.upper() == "TIMESTAMPTZ"
        return stamp.to_pydatetime() if self._timestamp_is_aware else stamp.tz_localize(None).to_pydatetime()

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """Rows with ``start <= ts < end``. A naive TIMESTAMP column is taken to hold UTC times."""
        started = time.perf_counter()
        lower, upper = as_utc(start), as_utc(end)
        bounds = [self._bound(lower), self._bound(upper)]
        with self._connect() as connection:
            connection.execute("SET TimeZone = 'UTC'")
            relation = connection.sql(self._query, params=bounds)
            table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
        frame = normalise_frame(table.to_pandas(), self.spec)
        return WindowRead(frame, {
            "source": "duckdb",
            "database": str(self.database),
            "table": self.spec.table,
            "rows": len(frame),
            "bytes_read": int(table.nbytes),
            "seconds": round(time.perf_counter() - started, 4),
            "query": self._query,
        })
