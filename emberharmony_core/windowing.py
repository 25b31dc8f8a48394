"""Where stride windows are: the one rule, used by the statistics, the projection, the stored
index and the checks.

The rule
--------
Per entity (never across entities), an entity's rows in time order are numbered t = 0, 1, 2, ...
over its whole series (every partition, in order). The stride-``s`` window ending on row ``t``
holds rows ``t - w + 1 .. t`` and exists when ``t >= w - 1`` and ``(t - w + 1) % s == 0``: windows
start at rows 0, s, 2s, ... of the entity's series, exactly what ``stride_windows`` gives on that
entity's series alone (the seed's rule). A window whose rows carry different splits is dropped
(counted). Each window belongs to the chunk, and so to the partition, holding its last row.

Why this rule: it depends neither on how rows are chunked nor on how time is partitioned
(the same windows whatever ``rows_per_chunk`` or the partition granularity), and it needs from
the past only a small carry per entity (how many rows it has had, and its last ``w - 1`` rows),
so a window reaches back over as many partitions as it must (an entity with one row a day still
gets its windows). The price: an old partition that gains or loses rows shifts the stride phase
of the entity's later windows, so later partitions must be re-materialised (Dagster shows them
stale through the carry's dependency).

Gaps (``max_gap``, off by default)
----------------------------------
With ``max_gap`` set (a duration), a window two of whose consecutive rows are more than
``max_gap`` apart (``time[i + 1] - time[i] > max_gap``, strictly) is not made: it is dropped from
the windows the rule above finds, and counted (``gap_dropped[s]``). Only that: the stride phase is
the entity's whole-series phase as without ``max_gap``, and no other window moves. Windows that
mix splits are counted first (``mixed_split_dropped``); ``gap_dropped`` counts the remaining ones
that span a gap, so ``kept = candidates - mixed_split_dropped - gap_dropped`` exactly.

Why drop, not restart the phase at each gap (segments): (1) it keeps the rule's independence of
chunking and partitioning with nothing new to carry: the carry already holds the times of each
entity's last ``w - 1`` rows, which is all a window reaching back needs to see a gap (a window
spans only its own ``w`` rows, and ``w = 1`` windows span none); (2) ``max_gap`` is monotone:
setting or changing it only removes windows that span gaps and never shifts the phase of later
windows, so runs with and without it compare window for window, the carry does not depend on it
(after changing it each partition's windows can be recomputed on their own, in any order, with the
stored carries), and the closed-form count check keeps its
meaning (it counts the rule's positions; gap and split drops are counted on top of it); (3) the
reference is one line for a user: the whole-series windows, minus those whose largest time step
exceeds ``max_gap``. The price: after a gap the first kept window at stride ``s`` may start up to
``s - 1`` rows later than a per-segment phase would start it.

Why off by default: a cadence to infer ``max_gap`` from is ambiguous on real data: irregular series
(event logs, trades, sensors that report on change), series whose cadence changes over time, mixed
cadences across entities, and series that are sparse by nature (one row a day, weekdays only:
the weekend is not a gap) all give a median step that is wrong for some of the data, and a wrong
guess silently drops windows. Off means every window is made; the count of what ``max_gap`` would
drop is one setting away, and per-partition metadata shows it.

    windower = Windower(window_size=5, strides=(1, 3, 5), carry=None)   # or the previous partition's carry
    for chunk in chunks:                                                 # ChunkRows, grouped by entity (ascending)
        made = windower.add(chunk, backend)                              # ChunkWindows
        stats = window_stats(made, stride=3)          # features.pca: PCAStats of its train windows
        projected = project_windows(made, 3, model)                      # (m, k) backend array
    carry = windower.finish()                                            # WindowCarry for the next partition

The carry streams: ``Windower`` reads the previous one and writes the next one (``sink``) in entity key
order alongside the chunks, so its memory is a chunk's entities, not every entity's (a day of 1,000,000
sensors with 3 rows each carried 0.6 GiB of rows in memory before; see ``layout.StoredCarry``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .features.windows import check_setting
from .names import SPLIT_NAMES

SPLITS = SPLIT_NAMES
TRAIN = 0  # code of "train" in SPLITS
_BLOCK_BYTES = 8 * 2**20  # windows gathered per block: a few MiB, so a block is made and multiplied in cache


def split_codes(values) -> np.ndarray:
    """(n,) int8 codes into ``SPLITS`` for split names; an unknown name raises naming it."""
    values = np.asarray(values)
    codes = np.full(len(values), -1, dtype=np.int8)
    for code, name in enumerate(SPLITS):
        codes[values == name] = code
    if (codes < 0).any():
        bad = pd.unique(values[codes < 0])[:5]
        raise ValueError(f"split column holds {list(bad)}; expected one of {list(SPLITS)}")
    return codes


def _arrow_split_codes(column) -> np.ndarray:
    """``split_codes`` of an Arrow column of split names, computed in Arrow (no Python string per row)."""
    array = _as_array(column)
    if pa.types.is_null(array.type):  # an empty partition's column, as an earlier build stored it
        return split_codes(np.full(len(array), None, dtype=object))  # none: no codes; else raises naming None
    codes = pc.index_in(array, value_set=pa.array(SPLITS, type=array.type))
    if codes.null_count:
        return split_codes(array.to_numpy(zero_copy_only=False))  # raises, naming the unknown values
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


def parse_duration(name: str, value) -> int | None:
    """A duration setting (``"2h"``, ``"1d"``, ``"90min"``, a ``pandas.Timedelta``) as int64 nanoseconds, or None
    when ``value`` is None; anything else, or a duration that is not positive, raises naming the setting."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a duration such as '2h', '1d' or '90min', got {value!r}")
    try:
        delta = pd.Timedelta(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{name} must be a duration such as '2h', '1d' or '90min' (pandas.Timedelta), got {value!r}: {exc}"
        ) from None
    if pd.isna(delta) or delta <= pd.Timedelta(0):
        raise ValueError(f"{name} must be a positive duration such as '2h', '1d' or '90min', got {value!r}")
    return int(delta.value)


def count_windows(seen_before: np.ndarray, rows: np.ndarray, window_size: int, stride: int) -> np.ndarray:
    """Windows the rule makes from ``rows`` new rows of an entity that had ``seen_before`` rows: per entity, (E,) int64.

    Closed form, independent of how ``Windower`` finds them (the window-count check compares the two):
    the row numbers t in [seen_before, seen_before + rows) with t >= w - 1 and t = w - 1 (mod s)."""
    a, b = (
        np.asarray(seen_before, dtype=np.int64),
        np.asarray(seen_before, dtype=np.int64) + np.asarray(rows, dtype=np.int64),
    )
    low = np.maximum(a, window_size - 1)
    first = low + (window_size - 1 - low) % stride
    return np.where(first < b, (b - 1 - first) // stride + 1, 0)


@dataclass
class ChunkRows:
    """One chunk of rows, grouped by entity (each entity's rows contiguous) and in time order within an entity.

    features (n, F) float array; entity (n,) keys (any hashable; None everywhere for a single series), or None
    when ``entity_arrow`` holds them; time (n,) int64 ns since epoch UTC; split (n,) int8 codes into ``SPLITS``;
    ``entity_arrow``, when the rows came from Arrow, the keys as an Arrow array (entity blocks are found and
    the window index taken in Arrow, without a Python object per row)."""

    features: np.ndarray
    entity: np.ndarray | None
    time: np.ndarray
    split: np.ndarray
    entity_arrow: pa.Array | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])


def _key_array(keys) -> pa.Array:
    """Entity keys as one Arrow array in a type both sides of a merge share: strings as ``string``, integers
    as ``int64``; a series without an entity column (every key None) has the one key 0."""
    if keys is None:
        return pa.array([], pa.int64())
    if isinstance(keys, (pa.Array, pa.ChunkedArray)):
        array = _as_array(keys)
    else:
        values = np.asarray(keys, dtype=object) if not isinstance(keys, np.ndarray) else keys
        array = pa.array(values.tolist() if values.dtype == object else values)
    if pa.types.is_null(array.type):
        return pa.array(np.zeros(len(array), np.int64))
    if array.null_count:
        raise ValueError("an entity key is NULL: every row needs an entity to be placed in a series")
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        return array.cast(pa.string())
    if pa.types.is_integer(array.type):
        return array.cast(pa.int64())
    return array


class WindowCarry:
    """Per entity, in ascending key order (binary for strings, numeric for numbers): ``keys`` (E,) Arrow array,
    rows seen so far ``seen`` (E,) int64, and its last ``w - 1`` rows, right-aligned: ``rows`` (E, w - 1, F),
    ``time`` (E, w - 1) int64 ns, ``split`` (E, w - 1) int8 (slots before an entity's first row are zeros).

    One batch of a carry: ``Windower`` reads the previous partition's carry and writes the next one as a
    stream of such batches in key order, a chunk's worth at a time, so no carry is ever whole in memory."""

    def __init__(
        self, window_size: int, n_features: int, dtype="float32", keys=None, seen=None, rows=None, time=None, split=None
    ):
        self.window_size, self.n_features = int(window_size), int(n_features)
        tail = self.window_size - 1
        self.keys = _key_array(keys)
        e = len(self.keys)
        self.seen = np.zeros(e, np.int64) if seen is None else np.asarray(seen, np.int64)
        self.rows = np.zeros((e, tail, self.n_features), dtype) if rows is None else np.asarray(rows)
        self.time = np.zeros((e, tail), np.int64) if time is None else np.asarray(time, np.int64)
        self.split = np.zeros((e, tail), np.int8) if split is None else np.asarray(split, np.int8)
        if e > 1:
            order = pc.sort_indices(self.keys).to_numpy()
            if (np.diff(order) != 1).any():  # as built by hand (tests): the stream order is key order
                self.keys, self.seen, self.rows, self.time, self.split = self._taken(order)

    @property
    def dtype(self) -> np.dtype:
        return self.rows.dtype

    def __len__(self) -> int:
        return len(self.keys)

    def _taken(self, index: np.ndarray):
        return (
            self.keys.take(pa.array(index, pa.int64())),
            self.seen[index],
            self.rows[index],
            self.time[index],
            self.split[index],
        )

    def take(self, index) -> WindowCarry:
        """The entities at ``index`` (int positions, or a boolean mask), in that order."""
        index = np.asarray(index)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64)
        out = WindowCarry.__new__(WindowCarry)
        out.window_size, out.n_features = self.window_size, self.n_features
        out.keys, out.seen, out.rows, out.time, out.split = self._taken(index)
        return out

    def slice(self, start: int, stop: int | None = None) -> WindowCarry:
        """Entities ``start:stop`` as views (no copy)."""
        stop = len(self) if stop is None else stop
        out = WindowCarry.__new__(WindowCarry)
        out.window_size, out.n_features = self.window_size, self.n_features
        out.keys = self.keys.slice(start, max(0, stop - start))
        out.seen, out.rows = self.seen[start:stop], self.rows[start:stop]
        out.time, out.split = self.time[start:stop], self.split[start:stop]
        return out

    def batches(self) -> Iterator[WindowCarry]:
        """The carry as a source for ``Windower``: itself, one batch."""
        yield self

    @staticmethod
    def concat(parts: Sequence[WindowCarry], window_size: int, n_features: int, dtype="float32") -> WindowCarry:
        parts = [p for p in parts if len(p)]
        if not parts:
            return WindowCarry(window_size, n_features, dtype)
        if len(parts) == 1:
            return parts[0]
        out = WindowCarry.__new__(WindowCarry)
        out.window_size, out.n_features = window_size, n_features
        out.keys = pa.concat_arrays([p.keys for p in parts])
        out.seen, out.rows, out.time, out.split = (
            np.concatenate([getattr(p, name) for p in parts]) for name in ("seen", "rows", "time", "split")
        )
        return out

    # stored form: one Arrow record batch, rows flattened to a fixed-size list per entity
    def arrow_schema(self) -> pa.Schema:
        tail, f = self.window_size - 1, self.n_features
        fields = [pa.field("entity", self.keys.type), pa.field("seen", pa.int64())]
        if tail:
            fields += [
                pa.field("rows", pa.list_(pa.from_numpy_dtype(self.dtype), tail * f)),
                pa.field("time", pa.list_(pa.int64(), tail)),
                pa.field("split", pa.list_(pa.int8(), tail)),
            ]
        return pa.schema(
            fields,
            metadata={"window_size": str(self.window_size), "n_features": str(f), "dtype": np.dtype(self.dtype).name},
        )

    def to_arrow(self) -> pa.RecordBatch:
        tail = self.window_size - 1
        columns = [self.keys, pa.array(self.seen)]
        if tail:

            def fixed(values, size):
                return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), size)

            columns += [fixed(self.rows, tail * self.n_features), fixed(self.time, tail), fixed(self.split, tail)]
        return pa.RecordBatch.from_arrays(columns, schema=self.arrow_schema())

    @classmethod
    def from_arrow(cls, batch: pa.RecordBatch) -> WindowCarry:
        meta = {k.decode(): v.decode() for k, v in (batch.schema.metadata or {}).items()}
        w, f, dtype = int(meta["window_size"]), int(meta["n_features"]), np.dtype(meta["dtype"])
        tail, e = w - 1, batch.num_rows
        out = cls.__new__(cls)
        out.window_size, out.n_features = w, f
        out.keys = _key_array(batch.column("entity"))
        out.seen = batch.column("seen").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if tail:

            def unpacked(name, shape, kind):
                values = batch.column(name).flatten().to_numpy(zero_copy_only=False)
                return values.astype(kind, copy=False).reshape(shape)

            out.rows = unpacked("rows", (e, tail, f), dtype)
            out.time, out.split = unpacked("time", (e, tail), np.int64), unpacked("split", (e, tail), np.int8)
        else:
            out.rows = np.zeros((e, 0, f), dtype)
            out.time, out.split = np.zeros((e, 0), np.int64), np.zeros((e, 0), np.int8)
        return out


class _CarryCursor:
    """Walks a carry's batches (ascending keys) once, handing out the entities up to a key."""

    def __init__(self, batches: Iterator[WindowCarry]):
        self._batches = iter(batches)
        self._head: WindowCarry | None = None

    def through(self, bound: pa.Scalar | None) -> Iterator[WindowCarry]:
        """The next entities with key <= ``bound`` (all that are left when None), a batch at a time; iterate it
        to the end."""
        while True:
            while self._head is None or not len(self._head):  # an empty batch (an empty day's carry) is skipped
                self._head = next(self._batches, None)
                if self._head is None:
                    return
            head = self._head
            if bound is not None and head.keys.type != bound.type:
                raise ValueError(
                    f"the carried entity keys are {head.keys.type}, the chunk's {bound.type}: the entity "
                    "column changed; re-materialise stride_windows from the first partition"
                )
            k = len(head) if bound is None else pc.sum(pc.less_equal(head.keys, bound)).as_py() or 0
            if k == len(head):
                self._head = None
                yield head
                continue
            self._head = head.slice(k)  # before handing out: a consumer may stop early
            if k:
                yield head.slice(0, k)
            return


def _merged(a: WindowCarry, b: WindowCarry) -> WindowCarry:
    """Two carries of different entities, each in key order, as one in key order."""
    if not len(a) or not len(b):
        return a if len(a) else b
    both = WindowCarry.concat([a, b], a.window_size, a.n_features, a.dtype)
    return both.take(pc.sort_indices(both.keys).to_numpy())


def check_key_order(keys: pa.Array, last: pa.Scalar | None) -> None:
    """A chunk's entity blocks (``keys``) come in strictly ascending key order, the first >= ``last``, the previous
    chunk's last (equal: that entity goes on); a source in another order would split or lose entities' series."""
    if not len(keys):
        return
    bad = None
    if len(keys) > 1:
        ascending = pc.less(keys.slice(0, len(keys) - 1), keys.slice(1)).to_numpy(zero_copy_only=False)
        if not ascending.all():
            i = int(np.flatnonzero(~ascending)[0])
            bad = (keys[i], keys[i + 1])
    if bad is None and last is not None and (keys.type != last.type or pc.less(keys[0], last).as_py()):
        bad = (last, keys[0])
    if bad is not None:
        raise ValueError(
            f"rows are not grouped by entity in ascending key order: entity {_key_text(bad[0])} comes before "
            f"{_key_text(bad[1])}; the source must return rows ordered by entity (strings in binary order, as DuckDB "
            "and BigQuery sort them without a COLLATE; numbers numerically), then time"
        )


def _key_text(scalar) -> str:
    return repr(scalar.as_py()) if isinstance(scalar, pa.Scalar) else repr(scalar)


@dataclass
class ChunkWindows:
    """The windows whose last row lies in one chunk.

    ``rows`` (N', F) backend array: per entity block, its carried rows then its chunk rows, so every
    window is ``rows[start : start + w]``. Per stride ``s``: ``starts[s]`` (m,) int64 into ``rows``,
    ``end_row[s]`` (m,) the chunk row each window ends on, ``split[s]`` (m,) int8 code, in (entity, time)
    order; ``candidates[s]`` windows before dropping the ``mixed_split_dropped[s]`` that mixed splits and
    then the ``gap_dropped[s]`` that span a gap longer than ``max_gap``; ``expected[s]`` the closed-form count
    (``count_windows``) the check compares ``candidates`` with; ``gaps`` how many steps between consecutive
    rows of an entity, ending on a row of the chunk, exceed ``max_gap`` (0 when it is off; with ``window_size``
    1 nothing is carried, so the step into an entity's first row of the chunk is not seen: no window spans it)."""

    backend: Any  # a backend object (get_backend): no common type
    rows: Any  # a backend array (NumPy, torch or MLX): no common type
    window_size: int
    starts: dict[int, np.ndarray] = field(default_factory=dict)
    end_row: dict[int, np.ndarray] = field(default_factory=dict)
    split: dict[int, np.ndarray] = field(default_factory=dict)
    candidates: dict[int, int] = field(default_factory=dict)
    mixed_split_dropped: dict[int, int] = field(default_factory=dict)
    expected: dict[int, int] = field(default_factory=dict)
    gap_dropped: dict[int, int] = field(default_factory=dict)
    gaps: int = 0

    @property
    def width(self) -> int:
        return self.window_size * int(self.rows.shape[1])


class Windower:
    """Applies the rule chunk after chunk, carrying each entity's count and last ``w - 1`` rows.

    ``carry``: the previous partition's carry, a source whose ``batches()`` yields ``WindowCarry`` batches in
    ascending key order (a ``WindowCarry``, ``layout.StoredCarry``), or None before the first partition.
    ``sink``: where the partition's new carry goes, a callable taking its batches in key order (None: kept, and
    returned by ``finish``; False: not made, for a pass that only reads windows). Both carries are streamed
    alongside the chunks (rows come grouped by entity in ascending key order), so memory stays one chunk
    whatever the number of entities. Call ``finish()`` after the last chunk.

    ``max_gap`` (a duration: ``"2h"``, ``pandas.Timedelta``, or int nanoseconds; None: off) drops the
    windows spanning a step longer than it (see the module docstring)."""

    def __init__(
        self,
        window_size: int,
        strides: Sequence[int],
        carry=None,
        *,
        n_features: int | None = None,
        dtype="float32",
        max_gap=None,
        sink=None,
    ):
        self.window_size = check_setting("window_size", window_size)
        self.strides = [check_setting("stride", s) for s in strides]
        if carry is not None and carry.window_size != self.window_size:
            raise ValueError(
                f"the carried window state was made with window_size {carry.window_size}, not "
                f"{self.window_size}: re-materialise stride_windows from the first partition"
            )
        self._carry_features = None if carry is None else carry.n_features
        self._n_features, self._dtype = n_features, dtype
        self.max_gap_ns = (
            None
            if max_gap is None
            else int(max_gap)
            if isinstance(max_gap, (int, np.integer)) and not isinstance(max_gap, bool)
            else parse_duration("max_gap", max_gap)
        )
        if self.max_gap_ns is not None and self.max_gap_ns <= 0:
            raise ValueError(f"max_gap must be a positive duration, got {max_gap!r}")
        # two cursors over the previous carry: one finds each chunk's entities, one passes the others on
        self._lookup = _CarryCursor(carry.batches()) if carry is not None else None
        self._passing = _CarryCursor(carry.batches()) if carry is not None and sink is not False else None
        self._sink = sink
        self._kept: list[WindowCarry] = []
        self._open: WindowCarry | None = None  # the last entity so far: its series may go on in the next chunk
        self._last_key = None

    def add(self, chunk: ChunkRows, backend) -> ChunkWindows:
        """Windows ending in ``chunk`` (rows grouped by entity in ascending key order, in time order within an
        entity, continuing the carry)."""
        w, n = self.window_size, len(chunk)
        features = np.ascontiguousarray(chunk.features)
        f = int(features.shape[1]) if features.ndim == 2 else 0
        if self._n_features is None:
            self._n_features = f
        if n and f != (self._carry_features if self._carry_features is not None else self._n_features):
            raise ValueError(
                f"chunk has {f} feature columns, the carried window state "
                f"{self._carry_features or self._n_features}: the feature columns changed; "
                "re-materialise stride_windows from the first partition"
            )
        tail = w - 1

        # entity blocks in the chunk, and what the carry knows of them
        b0, keys = entity_blocks(chunk)
        self._check_order(keys)
        lengths = np.diff(np.append(b0, n))
        known = self._carried(keys, f, features.dtype)
        seen0 = known.seen
        carried = np.minimum(seen0, tail)  # carried rows placed before each block

        # source layout: block b = its carried rows, then its chunk rows. Chunk row i of block b lands at
        # i + (rows carried into blocks 0..b); carried row k of block b at offsets[b] + k, from carry slot
        # tail - carried[b] + k
        block_len = carried + lengths
        offsets = np.concatenate([[0], np.cumsum(block_len)[:-1]]).astype(np.int64)
        total = int(block_len.sum())
        dest = np.arange(n, dtype=np.int64) + np.repeat(np.cumsum(carried), lengths)
        rows = np.empty((total, f), dtype=features.dtype)
        times = np.empty(total, np.int64)
        splits = np.empty(total, np.int8)
        rows[dest], times[dest], splits[dest] = features, chunk.time, chunk.split
        cdest = np.zeros(0, np.int64)  # layout positions of carried rows
        if carried.any():
            cblock = np.repeat(np.arange(len(b0)), carried)
            k = np.arange(len(cblock)) - np.repeat(np.cumsum(carried) - carried, carried)  # 0.. within a block
            cdest, cslot = offsets[cblock] + k, tail - carried[cblock] + k
            rows[cdest] = known.rows[cblock, cslot].astype(features.dtype, copy=False)
            times[cdest], splits[cdest] = known.time[cblock, cslot], known.split[cblock, cslot]
        series = np.repeat(seen0 - b0, lengths) + np.arange(n, dtype=np.int64)  # each chunk row's t in its series

        made = ChunkWindows(backend=backend, rows=backend.asarray(rows), window_size=w)
        # split changes before each layout position: a window [a, a + w) is pure when none lies inside it
        split_changes = np.concatenate([[0], np.cumsum(splits[1:] != splits[:-1])]) if w > 1 and total else None
        steps_over = None  # steps_over[i]: steps longer than max_gap among rows 0..i of the layout
        if self.max_gap_ns is not None and total > 1:
            block_of = np.repeat(np.arange(len(b0)), block_len)
            same_entity = block_of[1:] == block_of[:-1]
            over = (np.diff(times) > self.max_gap_ns) & same_entity  # step i -> i + 1
            mine = np.ones(total, bool)  # the chunk's own rows: gaps are counted on the row they end on
            mine[cdest] = False
            made.gaps = int((over & mine[1:]).sum())
            steps_over = np.concatenate([[0], np.cumsum(over)])
        for s in self.strides:
            end_rows = np.flatnonzero((series >= tail) & ((series - tail) % s == 0))  # chunk rows windows end on
            ends = dest[end_rows]
            starts = ends - tail
            made.candidates[s] = len(ends)
            made.expected[s] = int(count_windows(seen0, lengths, w, s).sum())
            if split_changes is not None and len(starts):
                keep = split_changes[ends] == split_changes[starts]
                starts, ends, end_rows = starts[keep], ends[keep], end_rows[keep]
            made.mixed_split_dropped[s] = made.candidates[s] - len(starts)
            if steps_over is not None and w > 1 and len(starts):
                keep = steps_over[ends] == steps_over[starts]  # no step longer than max_gap inside the window
                starts, ends, end_rows = starts[keep], ends[keep], end_rows[keep]
            made.gap_dropped[s] = made.candidates[s] - made.mixed_split_dropped[s] - len(starts)
            made.starts[s], made.end_row[s], made.split[s] = starts, end_rows, splits[ends]

        if len(keys):
            self._carry_forward(
                self._next_state(keys, seen0 + lengths, rows, times, splits, offsets + block_len, f, features.dtype)
            )
        return made

    def finish(self) -> WindowCarry | None:
        """After the last chunk: the rest of the new carry goes to the sink (the last entity, and the previous
        carry's entities this partition did not have); with no sink, the whole new carry is returned."""
        final = [self._open] if self._open is not None else []
        self._open = None
        self._emit(final, None)
        if self._sink is None:
            kept, self._kept = self._kept, []
            return WindowCarry.concat(
                kept, self.window_size, self._carry_features or self._n_features or 0, self._dtype
            )
        return None

    # -- the carry streams -------------------------------------------------------------------------
    def _check_order(self, keys: pa.Array) -> None:
        check_key_order(keys, self._last_key)
        if len(keys):
            self._last_key = keys[-1]

    def _carried(self, keys: pa.Array, f: int, dtype) -> WindowCarry:
        """What the carries know of the chunk's entities, aligned with its blocks (zeros for a new entity)."""
        known = WindowCarry.__new__(WindowCarry)
        b, tail = len(keys), self.window_size - 1
        known.window_size, known.n_features, known.keys = self.window_size, f, keys
        known.seen, known.rows = np.zeros(b, np.int64), np.zeros((b, tail, f), dtype)
        known.time, known.split = np.zeros((b, tail), np.int64), np.zeros((b, tail), np.int8)

        def place(at: np.ndarray, source: WindowCarry, hit) -> None:
            known.seen[at], known.time[at], known.split[at] = source.seen[hit], source.time[hit], source.split[hit]
            known.rows[at] = source.rows[hit]

        if self._open is not None and b and self._open.keys[0].equals(keys[0]):
            place(np.array([0]), self._open, np.array([0]))  # the entity the previous chunk ended in goes on
        if self._lookup is not None and b:
            for piece in self._lookup.through(keys[-1]):
                at = pc.index_in(piece.keys, value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False)
                hit = np.flatnonzero(at >= 0)
                if len(hit):
                    place(at[hit], piece, hit)
        return known

    def _next_state(self, keys, seen, rows, times, splits, block_end, f, dtype) -> WindowCarry:
        """Each block's entity after the chunk: its new count and last ``w - 1`` rows of the layout."""
        tail = self.window_size - 1
        state = WindowCarry.__new__(WindowCarry)
        state.window_size, state.n_features, state.keys, state.seen = self.window_size, f, keys, seen
        # slot k of entity b holds source row block_end[b] - tail + k, when that row is in the block
        source = block_end[:, None] - tail + np.arange(tail)[None, :]
        valid = np.arange(tail)[None, :] >= tail - np.minimum(seen, tail)[:, None]
        src = np.where(valid, source, 0)
        state.rows = np.where(valid[..., None], rows[src], np.zeros((), dtype)).astype(dtype, copy=False)
        state.time = np.where(valid, times[src], 0)
        state.split = np.where(valid, splits[src], 0).astype(np.int8, copy=False)
        return state

    def _carry_forward(self, state: WindowCarry) -> None:
        """The chunk's entities are final but the last (its series may go on); the previous last entity is
        final unless the chunk goes on with it."""
        final = []
        if self._open is not None and not self._open.keys[0].equals(state.keys[0]):
            final.append(self._open)
        final.append(state.slice(0, len(state) - 1))
        self._open = state.take([len(state) - 1])  # a copy: the chunk's arrays are not kept for one entity
        self._emit(final, state.keys[-1])

    def _emit(self, final: list[WindowCarry], bound) -> None:
        """Hand ``final`` (entities in key order, all <= ``bound``) to the sink, merged in key order with the
        previous carry's entities up to ``bound`` that this partition has not had (None: all the rest)."""
        if self._sink is False:
            return
        merged = WindowCarry.concat(final, self.window_size, self._n_features or 0, self._dtype) if final else None
        if merged is not None and not len(merged):
            merged = None
        done = 0
        for piece in self._passing.through(bound) if self._passing is not None else ():
            drop = np.zeros(len(piece), bool)
            if merged is not None:
                drop |= pc.is_in(piece.keys, value_set=merged.keys).to_numpy(zero_copy_only=False)
            if bound is not None:
                drop |= pc.equal(piece.keys, bound).to_numpy(zero_copy_only=False)  # the last entity: still open
            piece = piece.take(~drop) if drop.any() else piece
            if not len(piece):
                continue
            upto = done
            if merged is not None:
                rest = merged.keys.slice(done)
                upto = done + (pc.sum(pc.less_equal(rest, piece.keys[-1])).as_py() or 0)
            self._put(_merged(merged.slice(done, upto), piece) if merged is not None and upto > done else piece)
            done = upto
        if merged is not None and done < len(merged):
            self._put(merged.slice(done))

    def _put(self, carry: WindowCarry) -> None:
        if not len(carry):
            return
        if self._sink is None:
            self._kept.append(carry)
        else:
            self._sink(carry)


def entity_blocks(chunk: ChunkRows) -> tuple[np.ndarray, pa.Array]:
    """(first row of each run of one entity's rows (B,) int64, that run's key (B,) Arrow array, ``_key_array``)."""
    n = len(chunk)
    if not n:
        return np.zeros(0, np.int64), _key_array(None)
    if chunk.entity_arrow is not None:
        keys = _as_array(chunk.entity_arrow)
        differs = (
            pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).fill_null(True) if n > 1 else pa.array([], pa.bool_())
        )
        b0 = np.concatenate([[0], np.flatnonzero(differs.to_numpy(zero_copy_only=False)) + 1]).astype(np.int64)
        return b0, _key_array(keys.take(pa.array(b0)))
    entity = np.asarray(chunk.entity, dtype=object)
    b0 = np.concatenate([[0], np.flatnonzero(entity[1:] != entity[:-1]) + 1]).astype(np.int64)
    return b0, _key_array(entity[b0])


def gather_windows(backend, rows, starts: np.ndarray, window_size: int, block: int | None = None) -> Iterator[Any]:
    """Yield (k, w * F) contiguous blocks of the windows ``rows[start : start + w]`` flattened, in ``starts`` order."""
    f = int(rows.shape[1])
    d = window_size * f
    block = block or max(256, _BLOCK_BYTES // max(1, d * 4))
    offsets = np.arange(window_size, dtype=np.int64)
    for b0 in range(0, len(starts), block):
        index = (starts[b0 : b0 + block, None] + offsets[None, :]).reshape(-1)
        picked = backend.take(rows, backend.asarray(index), axis=0)  # (k * w, F)
        yield backend.reshape(picked, (len(index) // window_size, d))


def project_windows(made: ChunkWindows, stride: int, model):
    """Every window of the stride in ``made`` projected with ``model``: (m, k) backend array, window order, each
    component's column contiguous (the transpose of a (k, m) array: Parquet takes the columns as they are)."""
    backend = made.backend
    parts = [
        model.transform_by_component(block)
        for block in gather_windows(backend, made.rows, made.starts[stride], made.window_size)
    ]
    if not parts:
        return backend.zeros((0, model.n_components_), backend.dtype_name(made.rows))
    return backend.transpose(parts[0] if len(parts) == 1 else backend.concat(parts, axis=1))


def series_starts(n_rows: int, window_size: int, stride: int, first_row: int = 0) -> np.ndarray:
    """Starts (into ``rows``) of the rule's stride windows over one series whose ``rows[0]`` is row ``first_row``."""
    t = np.arange(max(0, n_rows - window_size + 1), dtype=np.int64)
    return t[(t + first_row) % stride == 0]


def chunk_rows(
    batch: pa.RecordBatch | pa.Table,
    feature_columns: Sequence[str],
    entity_column: str | None,
    timestamp_column: str,
    dtype="float32",
    split_column: str = "split",
    features: np.ndarray | None = None,
) -> ChunkRows:
    """The ``ChunkRows`` of an Arrow batch of ``features`` rows (grouped by entity, in time order); ``features``
    (n, F), when given, is the batch's feature matrix already computed (else read from ``feature_columns``)."""
    n = batch.num_rows
    matrix = features
    if matrix is None:  # filled column by column in Fortran order (contiguous writes), then one blocked transpose
        matrix = np.empty((n, len(feature_columns)), dtype=dtype, order="F")
        for j, name in enumerate(feature_columns):
            matrix[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
        matrix = np.ascontiguousarray(matrix)
    stamps = batch.column(timestamp_column)
    stamps = stamps.cast(pa.timestamp("ns", tz=getattr(stamps.type, "tz", None))).cast(pa.int64())
    return ChunkRows(
        features=matrix,
        entity=None if entity_column else np.full(n, None, dtype=object),
        entity_arrow=_as_array(batch.column(entity_column)) if entity_column else None,
        time=stamps.to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
        split=_arrow_split_codes(batch.column(split_column)),
    )


def _as_array(column) -> pa.Array:
    """One Arrow array (a table's column is chunked), dictionary-encoded values decoded."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def window_index(
    made: ChunkWindows, stride: int, rows: ChunkRows, row_offset: int = 0, entity_column: str = "entity"
) -> pa.Table:
    """The stored index of a stride's windows (Arrow): ``row`` (the partition row each ends on, int64), the
    entity, ``end_time`` (UTC, ns) and ``split``, one row per window in window order."""
    end = made.end_row[stride]
    return pa.table(
        {
            "row": pa.array(end.astype(np.int64) + int(row_offset), type=pa.int64()),
            # a series without an entity column: every key is NULL, typed (a string column, not Arrow's null type)
            entity_column: rows.entity_arrow.take(pa.array(end))
            if rows.entity_arrow is not None
            else pa.nulls(len(end), pa.string()),
            "end_time": pa.array(rows.time[end], type=pa.timestamp("ns", tz="UTC")),
            "split": pa.array(SPLITS, type=pa.string()).take(pa.array(made.split[stride])),
        }
    )


def columns_table(matrix: np.ndarray, names: Sequence[str], first: pa.Table | None = None) -> pa.Table:
    """``first``'s columns, then one column per column of ``matrix`` (m, k) named ``names``."""
    matrix = np.asfortranarray(matrix)  # each column contiguous: handed to Arrow without another copy
    arrays = (list(first.columns) if first is not None else []) + [
        pa.array(matrix[:, j]) for j in range(matrix.shape[1])
    ]
    return pa.Table.from_arrays(arrays, names=[*(first.column_names if first is not None else []), *names])


__all__ = [
    "SPLITS",
    "TRAIN",
    "check_key_order",
    "ChunkRows",
    "ChunkWindows",
    "WindowCarry",
    "Windower",
    "chunk_rows",
    "columns_table",
    "count_windows",
    "gather_windows",
    "parse_duration",
    "project_windows",
    "series_starts",
    "split_codes",
    "window_index",
]
