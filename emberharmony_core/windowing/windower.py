"""``Windower``: the rule applied chunk after chunk, streaming the carry; a chunk's rows (``ChunkRows``,
``chunk_rows``, ``entity_blocks``) and the windows found in it (``ChunkWindows``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..features.windows import check_setting
from .carry import CarryCursor, WindowCarry, as_array, check_key_order, key_array
from .rule import SPLITS, count_windows, parse_duration, split_codes


def _arrow_split_codes(column) -> np.ndarray:
    """``split_codes`` of an Arrow column of split names, computed in Arrow (no Python string per row)."""
    array = as_array(column)
    if pa.types.is_null(array.type):  # an empty partition's column, as an earlier build stored it
        return split_codes(np.full(len(array), None, dtype=object))  # none: no codes; else raises naming None
    codes = pc.index_in(array, value_set=pa.array(SPLITS, type=array.type))
    if codes.null_count:
        return split_codes(array.to_numpy(zero_copy_only=False))  # raises, naming the unknown values
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


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


def _merged(a: WindowCarry, b: WindowCarry) -> WindowCarry:
    """Two carries of different entities, each in key order, as one in key order."""
    if not len(a) or not len(b):
        return a if len(a) else b
    both = WindowCarry.concat([a, b], a.window_size, a.n_features, a.dtype)
    return both.take(pc.sort_indices(both.keys).to_numpy())


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
    windows spanning a step longer than it (see the package docstring)."""

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
        self._lookup = CarryCursor(carry.batches()) if carry is not None else None
        self._passing = CarryCursor(carry.batches()) if carry is not None and sink is not False else None
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
    """(first row of each run of one entity's rows (B,) int64, that run's key (B,) Arrow array, ``key_array``)."""
    n = len(chunk)
    if not n:
        return np.zeros(0, np.int64), key_array(None)
    if chunk.entity_arrow is not None:
        keys = as_array(chunk.entity_arrow)
        differs = (
            pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).fill_null(True) if n > 1 else pa.array([], pa.bool_())
        )
        b0 = np.concatenate([[0], np.flatnonzero(differs.to_numpy(zero_copy_only=False)) + 1]).astype(np.int64)
        return b0, key_array(keys.take(pa.array(b0)))
    entity = np.asarray(chunk.entity, dtype=object)
    b0 = np.concatenate([[0], np.flatnonzero(entity[1:] != entity[:-1]) + 1]).astype(np.int64)
    return b0, key_array(entity[b0])


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
        entity_arrow=as_array(batch.column(entity_column)) if entity_column else None,
        time=stamps.to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
        split=_arrow_split_codes(batch.column(split_column)),
    )
