"""Rows a partition cannot use as they are: duplicate (entity, timestamp) keys, NULL entity ids,
non-finite or overflowing feature values. Checked while the partition streams in, chunk by chunk.

The source hands a partition over as chunks in (entity NULLS LAST, timestamp) order, so equal keys
are adjacent, but a chunk boundary can fall inside a run of equal keys. :func:`group_intact_chunks`
re-chunks so that a run is never split (it hands a chunk on once the next one shows where the chunk's
last run ends, moving that run's continuation over); :func:`resolve_duplicates` then handles each
chunk's duplicate groups on their own. :class:`RowChecker` puts both together with the NULL-entity and value checks.

The rules (``settings.on_duplicate``):

``error`` (default)
    a partition holding two rows with one (entity, timestamp) key fails, naming the partition,
    the number of keys and extra rows and the first few keys.
``keep_last``
    one row per key: the last of its group in the source's order. The source orders by
    (entity, timestamp) only, so rows that tie on both come in the engine's order (DuckDB's sort,
    BigQuery's): deterministic only when the duplicates are identical.
``mean``
    one row per key: every numeric feature column is the mean of the group's non-NULL values
    (NULL when all are NULL), summed in sorted order, so the result does not depend on the physical
    row order; every other column must hold one value within the group (NULLs equal), else an error
    names the column and the key. Under ``mean`` numeric feature columns are float64 in every chunk
    (the mean of integers or booleans is not an integer).

Always:

* a NULL entity id (when there is an entity column) is an error: the row cannot be placed in any
  series;
* rows whose timestamp is NULL are never read (a partition's query is ``ts >= start AND ts < end``,
  which NULL never satisfies); they are not counted here (that would need a whole-table query);
* a numeric feature value that is ±inf, or finite but beyond what the pipeline can hold (float32:
  ±3.4e38, the range of ``settings.dtype``; float64: ±1.3e154, beyond which its square, which the
  variance needs, overflows) is an error naming the column, the partition, the count and the first
  example; NaN / NULL are allowed (they are imputed).

Every error is found while the partition streams in; once one is found, the checker stops handing
chunks on, reads the rest of the partition only to count, and raises ONE :class:`BadRowsError` listing
every problem of the partition, so the caller (writing to temporary files) keeps nothing of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ON_DUPLICATE = ("error", "keep_last", "mean")
EXAMPLES = 3
"""How many example keys / rows an error message shows."""


class BadRowsError(ValueError):
    """A partition's rows cannot be used as they are; the message names the partition and every culprit."""


def check_on_duplicate(value: str) -> str:
    if value not in ON_DUPLICATE:
        raise ValueError(f"on_duplicate must be one of {', '.join(repr(v) for v in ON_DUPLICATE)}, got {value!r}")
    return value


def value_limit(dtype: str) -> float:
    """The largest magnitude a numeric feature value may have under ``settings.dtype``."""
    if str(dtype) == "float32":
        return float(np.finfo(np.float32).max)
    return float(np.sqrt(np.finfo(np.float64).max))


# -- keys --------------------------------------------------------------------------------------


def object_nulls(values: np.ndarray) -> np.ndarray:
    """Where an object array holds None or NaN (cheaper than ``pd.isna`` on strings)."""
    # numpy's stubs refuse None as a ufunc operand, which an object array compares with element-wise
    is_none = np.asarray(np.equal(values, None), dtype=np.bool_)  # type: ignore[call-overload]
    return is_none | np.asarray(values != values, dtype=bool)


def _key_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """Comparable values of a key column and where it is NULL (None: nowhere)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or (
        isinstance(series.dtype, np.dtype) and series.dtype.kind == "M"
    ):
        values = series.array.asi8 if isinstance(series.dtype, pd.DatetimeTZDtype) else series.to_numpy().view("i8")
        null = values == np.iinfo(np.int64).min
    elif isinstance(series.dtype, np.dtype) and series.dtype != object:
        values = series.to_numpy()
        null = np.isnan(values) if values.dtype.kind == "f" else None
    else:
        values = series.to_numpy()
        try:
            null = object_nulls(values)
        except (TypeError, ValueError):  # pd.NA and other NA objects (extension dtypes)
            values = series.to_numpy(dtype=object, na_value=None)
            null = object_nulls(values)
    return values, (null if null is not None and null.any() else None)


def _differs(frame: pd.DataFrame, key_columns: Sequence[str]) -> np.ndarray:
    """``len(frame) - 1`` booleans: row i + 1's key differs from row i's (a NULL key part differs from all)."""
    n = len(frame)
    out = np.zeros(max(n - 1, 0), dtype=bool)
    if n < 2:
        return out
    for column in key_columns:
        values, null = _key_values(frame[column])
        out |= np.asarray(values[1:] != values[:-1], dtype=bool)
        if null is not None:
            out |= null[1:] | null[:-1]
    return out


def group_starts(frame: pd.DataFrame, key_columns: Sequence[str]) -> np.ndarray:
    """One boolean per row: the row starts a new run of equal keys (the first row always does)."""
    starts = np.ones(len(frame), dtype=bool)
    if key_columns:  # no key: every row is its own
        starts[1:] = _differs(frame, key_columns)
    return starts


def _join(frames: list[pd.DataFrame], starts: list[np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
    if len(frames) == 1:
        frame = frames[0]
        return (
            frame if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 else frame.reset_index(drop=True)
        ), starts[0]
    return pd.concat(frames, ignore_index=True), np.concatenate(starts)


def _intact(chunks: Iterable[pd.DataFrame], key_columns: Sequence[str]) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """``group_intact_chunks`` with each chunk's ``group_starts`` (computed once per row)."""
    key_columns = list(key_columns)
    pending: list[pd.DataFrame] = []  # the chunk being completed: it ends where a later chunk's key changes
    pending_starts: list[np.ndarray] = []
    empty = None
    for chunk in chunks:
        if len(chunk) == 0:
            empty = chunk if empty is None else empty
            continue
        starts = group_starts(chunk, key_columns)
        if not pending:
            pending, pending_starts = [chunk], [starts]
            continue
        edge = pd.concat([pending[-1].iloc[-1:], chunk.iloc[:1]], ignore_index=True)
        starts[0] = bool(_differs(edge, key_columns)[0])  # does the chunk's first row continue the last run?
        if starts[0]:  # the usual case: the boundary falls between keys, nothing is copied
            yield _join(pending, pending_starts)
            pending, pending_starts = [chunk], [starts]
            continue
        boundaries = np.flatnonzero(starts)
        if len(boundaries) == 0:  # the whole chunk continues the last run
            pending.append(chunk)
            pending_starts.append(starts)
            continue
        cut = int(boundaries[0])  # the run ends inside this chunk: its rows join the pending chunk
        yield _join(pending + [chunk.iloc[:cut]], pending_starts + [starts[:cut]])
        pending, pending_starts = [chunk.iloc[cut:]], [starts[cut:]]
    if pending:
        yield _join(pending, pending_starts)
    elif empty is not None:
        yield empty, np.ones(0, dtype=bool)


def group_intact_chunks(chunks: Iterable[pd.DataFrame], key_columns: Sequence[str]) -> Iterator[pd.DataFrame]:
    """The same rows in the same order, re-chunked so that no run of equal keys is split between chunks.

    A chunk is handed on once the next chunk shows where its last run of equal keys ends: when the
    boundary falls between two keys (always, for unique keys) the chunk goes on unchanged, otherwise the
    next chunk's leading rows of that run are appended to it. So chunks come out about as large as they
    went in, one chunk behind the input. Empty chunks are dropped, except that an input with no rows at
    all gives its first empty chunk (so the caller still sees the columns). Output chunks have a fresh
    RangeIndex.
    """
    for chunk, _ in _intact(chunks, key_columns):
        yield chunk


# -- duplicates --------------------------------------------------------------------------------


def _fmt(value) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return repr(value.item() if isinstance(value, np.generic) else value)


def _key_text(frame: pd.DataFrame, key_columns: Sequence[str], row: int) -> str:
    parts = [_fmt(frame[c].iloc[row]) for c in key_columns]
    return f"({', '.join(parts)})" if len(parts) > 1 else parts[0]


def numeric_values(series: pd.Series) -> np.ndarray:
    """float64 values of a numeric / boolean column, NaN for NULLs."""
    if series.dtype == object:  # object booleans / decimals with None
        return np.array([np.nan if pd.isna(v) else float(v) for v in series.tolist()], dtype=np.float64)
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _cell_values(series: pd.Series) -> np.ndarray:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.array.asi8
    if isinstance(series.dtype, np.dtype) and series.dtype != object:
        return series.to_numpy()
    return series.to_numpy(dtype=object, na_value=None)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality, NULL equal to NULL."""
    try:
        eq = np.asarray(a == b, dtype=bool)
    except (TypeError, ValueError):  # elements whose == is not a bool (arrays in cells)
        eq = np.array([bool(np.all(x == y)) for x, y in zip(a, b, strict=True)], dtype=bool)
    if a.dtype.kind == "f":
        eq |= np.isnan(a) & np.isnan(b)
    elif a.dtype == object:
        eq |= np.asarray(pd.isna(a), dtype=bool) & np.asarray(pd.isna(b), dtype=bool)
    return eq


@dataclass
class Duplicates:
    """What one chunk's duplicate keys were: ``keys`` keys held by more than one row, ``extra_rows`` rows
    beyond the first of each, ``examples`` the first few as text ``"(entity, ts) x3"``."""

    keys: int = 0
    extra_rows: int = 0
    examples: list[str] = field(default_factory=list)


def resolve_duplicates(
    frame: pd.DataFrame,
    key_columns: Sequence[str],
    on_duplicate: str,
    numeric_columns: Sequence[str] = (),
    where: str = "",
    starts: np.ndarray | None = None,
) -> tuple[pd.DataFrame, Duplicates]:
    """One row per key of a chunk whose runs of equal keys are intact (``group_intact_chunks``), in
    (entity, timestamp) order: ``(rows, Duplicates)``.

    ``on_duplicate``: ``error`` returns the frame unchanged (the caller decides what to raise from the
    counts); ``keep_last`` keeps the last row of each run; ``mean`` averages ``numeric_columns`` over the
    run's non-NULL values (summed in sorted order: independent of the physical order) and requires every
    other column to agree within the run, else a :class:`BadRowsError` naming the column, the key and
    ``where``. Under ``mean`` the ``numeric_columns`` come out float64 whether or not a chunk had
    duplicates. ``starts``: the frame's ``group_starts``, if known.
    """
    check_on_duplicate(on_duplicate)
    if on_duplicate == "mean":
        cast = {c: numeric_values(frame[c]) for c in numeric_columns if frame[c].dtype != np.float64}
        frame = frame.assign(**cast) if cast else frame
    n = len(frame)
    if n < 2 or not key_columns:
        return frame, Duplicates()
    starts = group_starts(frame, key_columns) if starts is None else starts
    first = np.flatnonzero(starts)
    if len(first) == n:
        return frame, Duplicates()
    sizes = np.diff(np.append(first, n))
    dup_groups = np.flatnonzero(sizes > 1)
    found = Duplicates(
        keys=int(len(dup_groups)),
        extra_rows=int(n - len(first)),
        examples=[f"{_key_text(frame, key_columns, int(first[g]))} x{int(sizes[g])}" for g in dup_groups[:EXAMPLES]],
    )
    if on_duplicate == "error":
        return frame, found
    if on_duplicate == "keep_last":
        return frame.iloc[first + sizes - 1].reset_index(drop=True), found
    # mean
    group = np.cumsum(starts) - 1
    members = np.flatnonzero(~starts)  # every row of a run but its first
    leaders = first[group[members]]
    numeric = set(numeric_columns)
    for column in frame.columns:
        if column in numeric or column in key_columns:
            continue
        values = _cell_values(frame[column])
        differ = ~_same(values[members], values[leaders])
        if differ.any():
            row = int(members[np.argmax(differ)])
            raise BadRowsError(
                f"{where}on_duplicate='mean': rows with the key {_key_text(frame, key_columns, row)} disagree in "
                f"column {column!r} ({_fmt(frame[column].iloc[int(first[group[row]])])} "
                f"vs {_fmt(frame[column].iloc[row])}); "
                f"only the numeric feature columns are averaged, every other column must agree within a key: "
                f"fix the rows upstream, or set settings.on_duplicate='keep_last'"
            )
    out = frame.iloc[first].reset_index(drop=True)
    in_dup = np.repeat(sizes > 1, sizes)
    rows = np.flatnonzero(in_dup)
    run = group[rows]
    for column in numeric_columns:
        values = frame[column].to_numpy()[rows]
        order = np.lexsort((values, run))  # by run, then value (NaN last): the physical order does not matter
        ordered, runs = values[order], run[order]
        bounds = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
        missing = np.isnan(ordered)
        sums = np.add.reduceat(np.where(missing, 0.0, ordered), bounds)
        counts = np.add.reduceat((~missing).astype(np.int64), bounds)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        merged = out[column].to_numpy(dtype=np.float64, copy=True)
        merged[dup_groups] = means
        out[column] = merged
    return out, found


# -- the checker -------------------------------------------------------------------------------


@dataclass
class _BadValues:
    count: int = 0
    example: str = ""


class RowChecker:
    """Checks and de-duplicates one partition's chunks as they stream; see the module docstring.

    ``checker.check(chunks)`` yields the rows to keep (one row per key; runs of equal keys never split
    between chunks), and raises one :class:`BadRowsError` at the end of the partition when anything
    was wrong, having yielded nothing after the first problem. ``metadata()`` then gives the counts.
    """

    def __init__(
        self,
        partition: str,
        timestamp_column: str,
        entity_column: str | None = None,
        feature_columns: Sequence[str] = (),
        dtype: str = "float32",
        on_duplicate: str = "error",
    ):
        self.partition = partition
        self.timestamp_column = timestamp_column
        self.entity_column = entity_column
        self.feature_columns = list(feature_columns)
        self.dtype = str(dtype)
        self.on_duplicate = check_on_duplicate(on_duplicate)
        self.limit = value_limit(self.dtype)
        self.key_columns = [c for c in (entity_column, timestamp_column) if c]
        self.rows_in = 0
        self.rows_out = 0
        self.duplicates = Duplicates()
        self.null_entities = 0
        self.null_entity_example = ""
        self.bad_values = {c: _BadValues() for c in self.feature_columns}

    @property
    def where(self) -> str:
        return f"partition {self.partition}: "

    def failed(self) -> bool:
        return bool(
            self.null_entities
            or any(v.count for v in self.bad_values.values())
            or (self.on_duplicate == "error" and self.duplicates.keys)
        )

    def _row_text(self, chunk: pd.DataFrame, row: int) -> str:
        return ", ".join(f"{c}={_fmt(chunk[c].iloc[row])}" for c in self.key_columns)

    def _scan(self, chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """NULL entities and bad values, counted per incoming chunk (each row once)."""
        for chunk in chunks:
            self.rows_in += len(chunk)
            if len(chunk) and self.entity_column is not None:
                null = _key_values(chunk[self.entity_column])[1]
                count = 0 if null is None else int(null.sum())
                if null is not None and count:
                    if not self.null_entities:
                        self.null_entity_example = (
                            f"{self.timestamp_column}={_fmt(chunk[self.timestamp_column].iloc[int(np.argmax(null))])}"
                        )
                    self.null_entities += count
            for column in self.feature_columns if len(chunk) else ():
                values = numeric_values(chunk[column])
                with np.errstate(invalid="ignore"):
                    bad = np.abs(values) > self.limit  # +-inf and overflow; NaN compares False
                count = int(bad.sum())
                if count:
                    found = self.bad_values[column]
                    if not found.count:
                        row = int(np.argmax(bad))
                        found.example = f"{float(values[row])!r} at {self._row_text(chunk, row)}"
                    found.count += count
            yield chunk

    def check(self, chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for chunk, starts in _intact(self._scan(chunks), self.key_columns):
            if len(chunk) == 0:  # no rows in the partition: the empty frame, for the columns
                yield chunk
                continue
            policy = "error" if self.failed() else self.on_duplicate  # failing: only count from here on
            rows, found = resolve_duplicates(chunk, self.key_columns, policy, self.feature_columns, self.where, starts)
            self.duplicates.keys += found.keys
            self.duplicates.extra_rows += found.extra_rows
            self.duplicates.examples += found.examples[: max(0, EXAMPLES - len(self.duplicates.examples))]
            if self.failed():
                continue
            self.rows_out += len(rows)
            yield rows
        if self.failed():
            raise BadRowsError(self.message())

    def message(self) -> str:
        problems = []
        if self.null_entities:
            problems.append(
                f"{self.null_entities:,} rows have a NULL entity id in column {self.entity_column!r} (first at "
                f"{self.null_entity_example}): a row without an entity cannot be placed in any series; fill the "
                f'column or filter those rows out upstream (e.g. a view with WHERE "{self.entity_column}" IS NOT NULL)'
            )
        for column, found in self.bad_values.items():
            if found.count:
                problems.append(
                    f"column {column!r} has {found.count:,} non-finite or out-of-range values "
                    f"(first: {found.example}); numeric feature values must be finite and within "
                    f"+-{self.limit:.3g} (settings.dtype {self.dtype}); "
                    f"replace them or set them NULL upstream (NULLs are imputed)"
                )
        if self.on_duplicate == "error" and self.duplicates.keys:
            keys = " and ".join(self.key_columns)
            problems.append(
                f"{self.duplicates.keys:,} ({', '.join(self.key_columns)}) keys occur more than once "
                f"({self.duplicates.extra_rows:,} extra rows), e.g. {', '.join(self.duplicates.examples)}: every row "
                f"needs its own {keys}; remove the duplicates upstream, or set settings.on_duplicate to 'keep_last' "
                f"(the last row of each key in the source's order) or 'mean' (numeric features averaged)"
            )
        head = f"{self.where}the source rows cannot be used as they are (nothing of this partition was kept)"
        return head + ": " + problems[0] if len(problems) == 1 else head + ":\n  - " + "\n  - ".join(problems)

    def metadata(self) -> dict:
        """Per-partition counts for the asset's metadata."""
        out = {"duplicate_keys": self.duplicates.keys}
        if self.on_duplicate == "mean":
            out["duplicate_rows_merged"] = self.duplicates.extra_rows
        elif self.on_duplicate == "keep_last":
            out["duplicate_rows_dropped"] = self.duplicates.extra_rows
        return out


__all__ = [
    "ON_DUPLICATE",
    "BadRowsError",
    "Duplicates",
    "RowChecker",
    "check_on_duplicate",
    "group_intact_chunks",
    "group_starts",
    "numeric_values",
    "resolve_duplicates",
    "value_limit",
]
