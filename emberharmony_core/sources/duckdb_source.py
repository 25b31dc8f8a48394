"""The embedded default source: a table in a local DuckDB database file.

``iter_window`` streams the window query's result as Arrow record batches
(``relation.to_arrow_reader(rows_per_chunk)``; ``fetch_record_batch`` on DuckDB
versions without it) and regroups them into pandas chunks of exactly
``rows_per_chunk`` rows (``base.iter_pandas_chunks``): DuckDB may hand over smaller
batches. DuckDB itself sorts for the ``ORDER BY`` (spilling to disk when it must);
Python holds one chunk and one batch at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

import duckdb

from .base import (
    DEFAULT_ROWS_PER_CHUNK,
    TableSpec,
    WindowRead,
    WindowStream,
    as_utc,
    check_rows_per_chunk,
    validate_columns,
)
from .sql import duckdb_table, duckdb_window_query


def read_settings(memory_limit: str, threads: int) -> dict:
    """The ordered read's DuckDB settings, checked: ``threads`` a whole number >= 1 and ``memory_limit`` a size
    DuckDB accepts (tried on an in-memory database); else a ``ValueError`` naming the setting."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"DuckDB source threads must be a whole number >= 1, got {threads!r}")
    try:
        duckdb.connect(":memory:", config={"memory_limit": memory_limit}).close()
    except (duckdb.Error, TypeError) as exc:
        raise ValueError(
            f"DuckDB source memory_limit {memory_limit!r} is not a size DuckDB accepts, such as '128MB' "
            f"or '1GB' ({str(exc).splitlines()[0]})"
        ) from None
    return {"memory_limit": memory_limit, "threads": threads}


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is DuckDB running out of its memory_limit: its own exception when the query fails, or
    Arrow's ``OSError`` carrying DuckDB's message when the sort fails while a batch is fetched."""
    return isinstance(error, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(error)


def check_database_file(database: str) -> str:
    """``database`` if it names an existing DuckDB file (or ``:memory:`` / a ``md:`` or URL database);
    else a ``FileNotFoundError`` naming the path -- at once, instead of a read-only connect failing
    (dagster-duckdb retries that for about 100 s)."""
    text = os.fspath(database)
    if text == ":memory:" or text.startswith(":memory:") or text.startswith(("md:", "motherduck:")) or "://" in text:
        return text
    if os.path.isfile(text):
        return text
    where = os.path.abspath(text)
    what = "is a directory, not a DuckDB file" if os.path.isdir(text) else "does not exist"
    raise FileNotFoundError(
        f"DuckDB database {text!r} ({where}) {what}: check the source's `database` setting; to create the demo "
        f"table there run `make demo` (or `python -m emberharmony_core.demo --database {text}`)"
    )


# the ordered read's memory: DuckDB sorts within memory_limit, spilling beyond it, and each sorting thread needs
# part of it, so the thread count is set, not DuckDB's one per core (docs/configuration.md, the DuckDB source)
DEFAULT_MEMORY_LIMIT = "128MB"
DEFAULT_THREADS = 2


class DuckDBTableReader:
    """Reads one half-open time window at a time with a parameterised query.

    ``connect`` opens a connection (default: read-only on ``database`` with ``memory_limit`` and ``threads``,
    which are checked and used only then); the Dagster layer passes a connection of
    ``dagster_duckdb.DuckDBResource`` that it made with the same two settings.
    """

    def __init__(
        self,
        database: str,
        spec: TableSpec,
        connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]] | None = None,
        *,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int = DEFAULT_THREADS,
    ):
        self.database = database
        self.spec = spec
        self.config = read_settings(memory_limit, threads) if connect is None else None
        self._connect = connect or self._read_only_connection
        self._query = duckdb_window_query(spec.table, spec.columns, spec.timestamp_column, spec.order_by)
        self._timestamp_is_aware: bool | None = None
        duckdb_table(spec.table)  # validate early

    dialect = "duckdb"

    @contextmanager
    def _read_only_connection(self):
        connection = duckdb.connect(check_database_file(self.database), read_only=True, config=self.config)
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

    def validate(self, **settings) -> None:
        """Check the configured columns (they exist, their types fit their roles) and the ``settings`` that
        name columns against the table's schema; one ``ValueError`` lists every problem (``schema.py``)."""
        validate_columns(self.spec, self.column_types(), self.dialect, **settings)

    def _bound(self, stamp) -> datetime:
        """A window bound typed like the timestamp column: aware for TIMESTAMPTZ, naive UTC otherwise."""
        if self._timestamp_is_aware is None:
            kind = self.column_types().get(self.spec.timestamp_column, "")
            self._timestamp_is_aware = "TIME ZONE" in kind.upper() or kind.upper() == "TIMESTAMPTZ"
        return stamp.to_pydatetime() if self._timestamp_is_aware else stamp.tz_localize(None).to_pydatetime()

    def _ordered_batches(self, connection, bounds, rows_per_chunk: int, metadata: dict, sent: dict):
        """The window's schema (once) then its record batches, in order; ``sent`` says what has gone out."""
        relation = connection.sql(self._query, params=bounds)
        if hasattr(relation, "to_arrow_reader"):  # DuckDB >= 1.5
            reader = relation.to_arrow_reader(rows_per_chunk)
        else:
            reader = relation.fetch_record_batch(rows_per_chunk)
        try:
            if not sent["schema"]:
                sent["schema"] = True
                yield reader.schema
            for batch in reader:
                metadata["bytes_read"] += int(batch.nbytes)
                sent["batches"] = True
                yield batch
        finally:
            reader.close()

    def _out_of_memory(self, connection, lower, upper, exc, lowered: bool = False) -> MemoryError:
        settings = connection.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
        assert settings is not None  # a SELECT without FROM returns exactly one row
        limit, threads = settings
        advice = "raise the DuckDB source's memory_limit" + ("" if int(threads) <= 1 else " or lower its threads")
        return MemoryError(
            f"DuckDB ran out of its memory_limit ({limit}) with {threads} thread{'s' if int(threads) > 1 else ''}"
            f"{' (after the configured threads had too)' if lowered else ''}, sorting {self.spec.table} from "
            f"{lower} to {upper} for the ordered read: each sorting thread needs about 40 MB of it; {advice} "
            f"(DuckDB: {str(exc).splitlines()[0]})"
        )

    def iter_window(self, start: datetime, end: datetime, rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK) -> WindowStream:
        """Rows with ``start <= ts < end`` as chunks of ``rows_per_chunk`` rows (see ``base.WindowStream``:
        an empty window yields no chunk). A naive TIMESTAMP column is taken to hold UTC times.

        The connection (from ``connect``) is held from the first chunk until the stream ends or is
        closed; while a stream is open, do not run other queries on a shared connection.
        """
        rows_per_chunk = check_rows_per_chunk(rows_per_chunk)
        lower, upper = as_utc(start), as_utc(end)
        bounds = [self._bound(lower), self._bound(upper)]  # before the query: it may open a connection

        def produce(metadata: dict):
            with self._connect() as connection:
                connection.execute("SET TimeZone = 'UTC'")
                sent = {"schema": False, "batches": False}
                try:
                    yield from self._ordered_batches(connection, bounds, rows_per_chunk, metadata, sent)
                except (duckdb.OutOfMemoryException, OSError) as exc:
                    if not out_of_memory(exc):
                        raise
                    threads = connection.execute("SELECT current_setting('threads')").fetchone()
                    if sent["batches"] or threads is None or int(threads[0]) != DEFAULT_THREADS:
                        raise self._out_of_memory(connection, lower, upper, exc) from None
                    # at the default threads the sort ran out before the first row came (a day near the limit):
                    # once more on one thread, which needs less of it (docs/configuration.md); threads set by
                    # hand fail as they are, naming both settings
                    connection.execute("SET threads = 1")
                    metadata["duckdb_single_thread_retries"] = 1
                    try:
                        yield from self._ordered_batches(connection, bounds, rows_per_chunk, metadata, sent)
                    except (duckdb.OutOfMemoryException, OSError) as again:
                        if not out_of_memory(again):
                            raise
                        raise self._out_of_memory(connection, lower, upper, again, lowered=True) from None
                    finally:
                        connection.execute(f"SET threads = {DEFAULT_THREADS}")  # a shared connection as it was

        return WindowStream(
            self.spec,
            self.spec.columns,
            rows_per_chunk,
            produce,
            {
                "source": "duckdb",
                "database": str(self.database),
                "table": self.spec.table,
                "rows": 0,
                "bytes_read": 0,
                "seconds": 0.0,
                "query": self._query,
            },
        )

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """Rows with ``start <= ts < end``: the concatenation of ``iter_window``'s chunks."""
        return self.iter_window(start, end).read()
