"""What every source reads: a table, its columns, one half-open time window at a time.

Two ways to read a window ``[start, end)``:

* ``reader.iter_window(start, end, rows_per_chunk)`` -> ``WindowStream``: the rows as
  pandas chunks of exactly ``rows_per_chunk`` rows (the last may be shorter), in
  (entity NULLS LAST, timestamp) order across chunks. Python memory is bounded by
  the chunk size (plus one batch of the engine), never by the window;
* ``reader.read_window(start, end)`` -> ``WindowRead``: the concatenation of those chunks.

``rechunk`` / ``iter_pandas_chunks`` (the one re-chunking path every reader uses) and
``normalise_types`` (the one timestamp normalisation) live here.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeAlias

import pandas as pd
import pyarrow as pa

from ..names import DEFAULT_ROWS_PER_CHUNK
from ..store import frame_from_arrow
from .schema import validate_schema
from .spec import TableSpec


@dataclass
class WindowRead:
    """One window's rows (in (entity NULLS LAST, timestamp) order; timestamp as UTC) and what the read cost."""

    frame: pd.DataFrame
    metadata: dict


class TableReader(Protocol):
    spec: TableSpec

    def column_types(self) -> Mapping[str, str]:
        """The table's schema: column name -> the engine's type name."""

    def validate(self, **settings) -> None:
        """Check the table against ``spec`` and the pipeline ``settings`` that name columns (one schema
        read, no rows): ``validate_columns``; raises one ``ValueError`` listing every problem."""

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """Rows with ``start <= timestamp < end`` (tz-aware UTC datetimes), only ``spec.columns``."""

    def iter_window(self, start: datetime, end: datetime, rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK) -> WindowStream:
        """The same rows as ``read_window``, as chunks of at most ``rows_per_chunk`` rows."""


def validate_columns(spec: TableSpec, column_types: Mapping[str, str], dialect: str = "duckdb", **settings) -> None:
    """Raise ONE ``ValueError`` (``schema.SchemaError``) naming every configured column the table lacks
    and every column whose type does not fit its role (a non-numeric feature, a timestamp that is not
    one...); with ``settings`` (``drop_columns``, ``target_column``, ``split_key``,
    ``force_categorical_columns``, ``max_categories``) those are checked too. See ``schema.py``."""
    validate_schema(spec, column_types, dialect=dialect, **settings)


def as_utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    """A tz-aware UTC timestamp (naive input is taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def normalise_types(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Timestamp column to ``datetime64[ns, UTC]`` (naive values are taken as UTC) and a fresh
    RangeIndex; rows are NOT reordered. Other columns are left as they are."""
    ts = frame[spec.timestamp_column]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    frame[spec.timestamp_column] = ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        frame = frame.reset_index(drop=True)
    return frame


def sort_frame(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Rows in (entity, timestamp) order, NaN/None last (the order of the window queries), fresh index."""
    return frame.sort_values(spec.order_by, kind="stable", na_position="last").reset_index(drop=True)


def normalise_frame(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Timestamp column to ``datetime64[ns, UTC]``, rows sorted by (entity, timestamp), fresh index.

    For frames whose order is not known; the readers' chunks are only ``normalise_types``-ed
    (their SQL ``ORDER BY`` already gives the order, across chunks)."""
    return sort_frame(normalise_types(frame, spec), spec)


def check_rows_per_chunk(rows_per_chunk: Any) -> int:
    """``rows_per_chunk`` as an int >= 1, or a ``ValueError`` naming the setting."""
    if isinstance(rows_per_chunk, bool) or not isinstance(rows_per_chunk, numbers.Integral):
        raise ValueError(f"rows_per_chunk must be a whole number of rows >= 1, got {rows_per_chunk!r}")
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    return int(rows_per_chunk)


Piece: TypeAlias = "pa.RecordBatch | pa.Table | pd.DataFrame"
"""What an engine hands over: Arrow record batches / tables, or pandas frames (bigframes)."""


def _is_arrow(piece: Piece) -> bool:
    return isinstance(piece, (pa.RecordBatch, pa.Table))


def _piece_rows(piece: Piece) -> int:
    return piece.num_rows if _is_arrow(piece) else len(piece)


def _piece_slice(piece: Piece, offset: int, length: int) -> Piece:
    return piece.slice(offset, length) if _is_arrow(piece) else piece.iloc[offset : offset + length]


def _join(pieces: list[Piece]) -> pa.Table | pd.DataFrame:
    if _is_arrow(pieces[0]):
        return pa.concat_tables([p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in pieces])
    return pieces[0] if len(pieces) == 1 else pd.concat(pieces)


def rechunk(pieces: Iterable[Piece], rows_per_chunk: int) -> Iterator[pa.Table | pd.DataFrame]:
    """Regroup ``pieces`` (in order) into groups of exactly ``rows_per_chunk`` rows, the last shorter.

    Small pieces are accumulated, large ones sliced (zero-copy for Arrow); at most one group
    plus one incoming piece is held at a time, never the whole input. Empty pieces are
    dropped, so no rows -> no group. Arrow pieces come out as a ``pyarrow.Table``, pandas
    pieces as a ``DataFrame`` (index not reset).
    """
    rows_per_chunk = check_rows_per_chunk(rows_per_chunk)
    held: list[Piece] = []
    n_held = 0
    for piece in pieces:
        n = _piece_rows(piece)
        offset = 0
        while n - offset > 0:
            take = min(rows_per_chunk - n_held, n - offset)
            held.append(piece if offset == 0 and take == n else _piece_slice(piece, offset, take))
            n_held += take
            offset += take
            if n_held == rows_per_chunk:
                group, held, n_held = _join(held), [], 0
                yield group
    if n_held:
        yield _join(held)


def iter_pandas_chunks(pieces: Iterable[Piece], spec: TableSpec, rows_per_chunk: int) -> Iterator[pd.DataFrame]:
    """THE chunking path of every reader: engine pieces in, pandas chunks of exactly ``rows_per_chunk``
    rows out (the last shorter), in the pieces' order, each ``normalise_types``-ed.

    Arrow groups are converted with ``store.frame_from_arrow`` -- the conversion ``read_window``
    always used -- so column types are pandas' usual ones for the Arrow types, except STRUCT columns,
    which stay Arrow-backed (``pd.ArrowDtype``). One caveat of
    converting per chunk: an INTEGER (BOOL) column with NULLs is float64 (object) only in the
    chunks that hold a NULL, int64 (bool) in the others; the concatenation has the type a
    whole-window conversion gives.
    """
    for group in rechunk(pieces, rows_per_chunk):
        frame = frame_from_arrow(group) if isinstance(group, pa.Table) else group.copy()
        yield normalise_types(frame, spec)


def empty_frame_for(schema: pa.Schema | pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The zero-row frame of an Arrow schema (or an empty pandas frame), typed like the chunks."""
    frame = frame_from_arrow(schema.empty_table()) if isinstance(schema, pa.Schema) else schema.iloc[:0].copy()
    return normalise_types(frame, spec)


Producer = Callable[[dict], Generator[Any, None, None]]


class WindowStream:
    """Rows with ``start <= ts < end`` as pandas DataFrame chunks of at most ``rows_per_chunk`` rows.

    * Every chunk but the last has exactly ``rows_per_chunk`` rows. **An empty window yields no
      chunk at all**; ``columns`` and ``empty_frame()`` give its schema (``read()`` returns that
      empty frame).
    * Rows are in (entity NULLS LAST, timestamp) order ACROSS chunks: the query's ``ORDER BY``
      defines it, chunks are not re-sorted one by one (rows with equal (entity, timestamp)
      keep the engine's order).
    * Each chunk has exactly ``columns`` in that order, the timestamp column as
      ``datetime64[ns, UTC]`` and a fresh RangeIndex; other types as the engine's Arrow
      conversion gives them (``read_window``'s types). Per chunk, pandas' conversion makes a
      nullable INTEGER (BOOL) column float64 (object) only in chunks holding a NULL, int64
      (bool) in the others; ``arrow_schema`` is the one schema behind all of them.
    * ``metadata`` is complete once iteration has ended (or the stream was closed): the keys
      ``read_window`` reports plus ``chunks``; ``rows`` / ``chunks`` / ``bytes_read`` count what
      was handed out so far, ``seconds`` is the time spent inside the stream (query, download,
      conversion), not the consumer's time between chunks.

    Nothing runs until the first chunk (or ``empty_frame()``) is asked for. The stream is
    one-shot: iterate it once. Use it as a context manager (or call ``close()``) when the
    consumer may stop early or raise: that closes the engine's reader and connection at
    once; a stream iterated to the end, or failing inside, closes itself.

    Readers build it from a *producer*: a generator function taking the metadata dict that
    first yields the result's schema (a ``pyarrow.Schema`` or an empty pandas frame), then
    the result's pieces (Arrow batches / tables or pandas frames) in order, and releases its
    resources in ``finally``.
    """

    def __init__(
        self,
        spec: TableSpec,
        columns: Iterable[str],
        rows_per_chunk: int,
        producer: Producer,
        metadata: Mapping[str, Any],
    ):
        self.spec = spec
        self.rows_per_chunk = check_rows_per_chunk(rows_per_chunk)
        self.columns: list[str] = list(columns)
        self.metadata: dict = {**metadata, "rows": 0, "chunks": 0}
        self._producer = producer
        self._source: Generator | None = None
        self._chunks: Iterator[pd.DataFrame] | None = None
        self._empty: pd.DataFrame | None = None
        self._arrow_schema: pa.Schema | None = None
        self._elapsed = 0.0
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        if self._chunks is not None or self._closed:
            return
        self._source = self._producer(self.metadata)
        try:
            schema = next(self._source)
        except StopIteration:
            raise RuntimeError("window stream producer ended before reporting the result's schema") from None
        self._empty = empty_frame_for(schema, self.spec)
        self._arrow_schema = schema if isinstance(schema, pa.Schema) else None
        self._chunks = iter_pandas_chunks(self._source, self.spec, self.rows_per_chunk)

    def _timed(self, step: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        try:
            return step()
        finally:
            self._elapsed += time.perf_counter() - began
            self.metadata["seconds"] = round(self._elapsed, 4)

    def close(self) -> None:
        """Stop reading: close the engine's reader / connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for generator in (self._chunks, self._source):
            close = getattr(generator, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> WindowStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[pd.DataFrame]:
        return self

    def __next__(self) -> pd.DataFrame:
        if self._closed:
            raise StopIteration

        def step():
            self._start()
            return next(self._chunks)

        try:
            chunk = self._timed(step)
        except BaseException:  # the end (StopIteration) or a failure: release the engine now
            self.close()
            raise
        self.metadata["rows"] += len(chunk)
        self.metadata["chunks"] += 1
        return chunk

    def empty_frame(self) -> pd.DataFrame:
        """A zero-row frame with the chunks' columns and dtypes (runs the query if it has not run yet)."""
        if self._empty is None:
            if self._closed:
                raise RuntimeError("the stream was closed before its query ran: no schema to report")
            try:
                self._timed(self._start)
            except BaseException:
                self.close()
                raise
        assert self._empty is not None  # set by _start
        return self._empty.copy()

    @property
    def arrow_schema(self) -> pa.Schema | None:
        """The engine's Arrow schema of the result (DuckDB, BigQuery; ``None`` for bigframes, which hands
        over pandas), known once the query ran. One schema for every chunk: a Parquet writer can
        ``pa.Table.from_pandas(chunk, schema=...)`` although a NULL-free chunk of a nullable INTEGER
        (BOOL) column is int64 (bool) in pandas and one with NULLs float64 (object)."""
        return self._arrow_schema

    def read(self) -> WindowRead:
        """Every (remaining) chunk concatenated -- what ``read_window`` returns -- with the metadata."""
        with self:
            chunks = list(self)
            if not chunks:
                frame = self.empty_frame()
            elif len(chunks) == 1:
                frame = chunks[0]
            else:
                frame = pd.concat(chunks, ignore_index=True)
        return WindowRead(frame, self.metadata)
