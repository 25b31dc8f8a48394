"""Days as a map: a window-carry summary per day, and a light fold over the summaries (issue 22).

The carry after day d (``windowing.WindowCarry``: per entity its row count ``seen`` and last ``w - 1``
rows, times and split codes, right-aligned) was made by day d's windows pass reading the carry of day
d - 1, a chain over heavy passes. Here it comes apart:

- ``day_summary(chunks, ...)``: from day d's rows alone, the carry ``Windower(w, [], carry=None)`` would
  make over them (``seen`` = the day's rows per entity, its last ``min(seen, w - 1)`` rows). Any number
  of days at once, in any order: a map.
- ``fold_carry(previous, day)``: the carry after d from the carry after d - 1 and day d's summary, a
  streaming merge-join in key order over the two carries, never over rows:

      carry = None
      for summary in summaries:          # in day order; each a WindowCarry or layout.StoredCarry
          carry = fold_carry(carry, summary)

  gives after every day exactly the carry the chained ``Windower`` passes give (keys, seen, rows, time,
  split: tests/core/test_carry_fold.py).

Both stream: batches in, ``WindowCarry`` batches in ascending key order out to ``sink`` (a callable, e.g.
``layout.CarryWriter``; None keeps them and returns the whole carry), so memory is a chunk (summary) or a
batch of each carry (fold), never a whole carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .windowing import ChunkRows, WindowCarry, check_key_order, entity_blocks

Sink = Callable[[WindowCarry], None]


def day_summary(
    chunks: Iterable[ChunkRows], window_size: int, n_features: int, dtype="float32", sink: Sink | None = None
) -> WindowCarry | None:
    """One day's carry summary from its rows alone, streamed.

    ``chunks``: the day's ``ChunkRows`` (features (n, F)), grouped by entity in ascending key order, in time
    order within an entity; an entity may span chunks. Per entity: ``seen`` = its rows in the day, ``rows``
    (w - 1, F) / ``time`` / ``split`` (w - 1,) its last ``min(seen, w - 1)`` rows right-aligned, zeros before;
    rows cast to ``dtype``. Batches in key order go to ``sink``; with ``sink=None`` the whole summary is
    returned. Equal to the carry of ``Windower(window_size, [], carry=None)`` over the same chunks, without
    laying out the rows (only the last ``w - 1`` rows of each entity are gathered)."""
    w, f, dtype = int(window_size), int(n_features), np.dtype(dtype)
    if w < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    tail, slots = w - 1, np.arange(w - 1)
    out = _Out(sink, w, f, dtype)
    open_: WindowCarry | None = None  # the last entity so far: its rows may go on in the next chunk
    for chunk in chunks:
        n = len(chunk)
        if not n:
            continue
        features = chunk.features
        if features.ndim != 2 or features.shape[1] != f:
            raise ValueError(
                f"chunk has {features.shape[1] if features.ndim == 2 else 0} feature columns, n_features is {f}"
            )
        b0, keys = entity_blocks(chunk)
        check_key_order(keys, open_.keys[0] if open_ is not None else None)
        lengths = np.diff(np.append(b0, n))
        valid = slots[None, :] >= tail - np.minimum(lengths, tail)[:, None]  # (B, w - 1)
        src = np.where(valid, (b0 + lengths)[:, None] - tail + slots[None, :], 0)
        state = WindowCarry.__new__(WindowCarry)
        state.window_size, state.n_features, state.keys, state.seen = w, f, keys, lengths.astype(np.int64)
        state.rows = features[src].astype(dtype, copy=False)
        state.rows[~valid] = 0
        state.time = np.where(valid, np.asarray(chunk.time, np.int64)[src], 0)
        state.split = np.where(valid, np.asarray(chunk.split, np.int8)[src], 0).astype(np.int8, copy=False)
        if open_ is not None:
            if open_.keys[0].equals(keys[0]):  # the entity goes on: its earlier rows, then these
                first = _join(open_, state.slice(0, 1))
                state.seen[0], state.rows[0], state.time[0], state.split[0] = (
                    first.seen[0],
                    first.rows[0],
                    first.time[0],
                    first.split[0],
                )
            else:
                out(open_)
        out(state.slice(0, len(state) - 1))
        open_ = state.take([len(state) - 1])  # a copy: the chunk's arrays are not kept for one entity
    if open_ is not None:
        out(open_)
    return out.finish()


def fold_carry(previous, day, sink: Sink | None = None) -> WindowCarry | None:
    """The carry after a day from the carry before it and the day's summary (``day_summary``).

    ``previous`` and ``day``: sources whose ``batches()`` yield ``WindowCarry`` batches in ascending key order
    (a ``WindowCarry``, a ``layout.StoredCarry``); ``previous`` None (the first day) gives the summary itself.
    Per entity: in both, ``seen`` adds and the tail is the last ``w - 1`` of (previous tail rows, then the day's)
    with rows, time and split moved together; in one only, that one's (an empty day: ``previous`` unchanged).
    A streaming merge-join: one batch of each source in memory, each output batch handed to ``sink`` in key
    order (None: the whole carry is returned). A batch where both have entities takes the day's dtype. Raises when
    window sizes, feature counts or key types differ."""
    if previous is not None:
        for name in ("window_size", "n_features"):
            a, b = getattr(previous, name), getattr(day, name)
            if a != b:
                raise ValueError(
                    f"the previous carry has {name} {a}, the day's summary {name} {b}: they were made "
                    "with other settings; re-make the summaries, then fold from the first day"
                )
    out = _Out(sink, day.window_size, day.n_features, getattr(day, "dtype", "float32"))
    older = _Head(previous.batches() if previous is not None else iter(()))
    newer = _Head(day.batches())
    while True:
        a, b = older.peek(), newer.peek()
        if a is None or b is None:
            for rest in (older, newer):
                while (piece := rest.pop()) is not None:
                    out(piece)
            return out.finish()
        if a.keys.type != b.keys.type:
            raise ValueError(
                f"the previous carry's entity keys are {a.keys.type}, the day's {b.keys.type}: the entity "
                "column changed; fold from the first day"
            )
        # every key <= bound of both sources is in hand: join those, then go on (one head is used up each time)
        bound = a.keys[-1] if pc.less_equal(a.keys[-1], b.keys[-1]).as_py() else b.keys[-1]
        out(_join(older.through(bound), newer.through(bound)))


def _join(a: WindowCarry, b: WindowCarry) -> WindowCarry:
    """Carries ``a`` (earlier) and ``b`` (later), each in key order, as one in key order: ``b``'s entities with
    ``a``'s history before them (vectorised: one pass per tail length, w - 1 at most, never per entity)."""
    if not len(a) or not len(b):
        return a if len(a) else b
    tail, dtype = b.window_size - 1, b.dtype
    if a.keys.equals(b.keys):  # the same entities (every day the same sensors): no hashing
        ia, kept = np.arange(len(b)), np.zeros(0, np.int64)
    else:
        ia = pc.index_in(b.keys, value_set=a.keys).fill_null(-1).to_numpy(zero_copy_only=False)  # (Eb,) into a; -1: new
        kept = np.flatnonzero(~pc.is_in(a.keys, value_set=b.keys).to_numpy(zero_copy_only=False))  # a's not in b
    fields = ("seen", "rows", "time", "split")
    if len(kept) == 0:  # b has every entity of a: b's order
        out, pos_b = _copied(b, dtype), np.arange(len(b))
    elif (ia >= 0).all():  # a has every entity of b: a's order, b's entities written over theirs
        out, pos_b = _copied(a, dtype), ia
        for name in fields:
            getattr(out, name)[pos_b] = getattr(b, name)
    else:  # the union, sorted
        keys = pa.concat_arrays([a.keys.take(pa.array(kept)), b.keys])
        order = pc.sort_indices(keys).to_numpy()
        position = np.empty(len(order), np.int64)
        position[order] = np.arange(len(order))
        e, pos_a, pos_b = len(keys), position[: len(kept)], position[len(kept) :]
        out = WindowCarry.__new__(WindowCarry)
        out.window_size, out.n_features, out.keys = b.window_size, b.n_features, keys.take(pa.array(order))
        out.seen, out.rows = np.empty(e, np.int64), np.empty((e, tail, b.n_features), dtype)
        out.time, out.split = np.empty((e, tail), np.int64), np.empty((e, tail), np.int8)
        for name in fields:
            getattr(out, name)[pos_a] = getattr(a, name)[kept]
            getattr(out, name)[pos_b] = getattr(b, name)
    both = np.flatnonzero(ia >= 0)
    at, src = pos_b[both], ia[both]
    out.seen[at] += a.seen[src]
    if tail:
        # b's last min(seen, w - 1) rows stay in their slots; the slots before take a's last rows, shifted left
        # (a's zeros before its first row come along: zeros before the entity's first row)
        newer = np.minimum(b.seen[both], tail)
        for j in np.unique(newer[newer < tail]):
            pick = newer == j
            p, q = at[pick], src[pick]
            out.rows[p, : tail - j] = a.rows[q, j:]
            out.time[p, : tail - j] = a.time[q, j:]
            out.split[p, : tail - j] = a.split[q, j:]
    return out


def _copied(carry: WindowCarry, dtype) -> WindowCarry:
    """``carry`` with its own arrays (rows as ``dtype``), to be written into."""
    out = carry.slice(0)
    out.seen, out.time, out.split = carry.seen.copy(), carry.time.copy(), carry.split.copy()
    out.rows = carry.rows.astype(dtype, copy=True)
    return out


class _Head:
    """A carry source's batches (ascending keys), walked once: the current batch, and its entities up to a key."""

    def __init__(self, batches: Iterator[WindowCarry]):
        self._batches = iter(batches)
        self._head: WindowCarry | None = None

    def peek(self) -> WindowCarry | None:
        while self._head is None or not len(self._head):
            self._head = next(self._batches, None)
            if self._head is None:
                return None
        return self._head

    def pop(self) -> WindowCarry | None:
        head, self._head = self.peek(), None
        return head

    def through(self, bound: pa.Scalar) -> WindowCarry:
        """The current batch's entities with key <= ``bound`` (``bound`` <= its last key, or it is used up)."""
        head = self.peek()
        assert head is not None  # callers peek first: a batch remains
        k = pc.sum(pc.less_equal(head.keys, bound)).as_py() or 0
        if k == len(head):
            self._head = None
            return head
        self._head = head.slice(k)
        return head.slice(0, k)


class _Out:
    """Hands non-empty batches to the sink, or keeps them for ``finish`` to return as one carry."""

    def __init__(self, sink: Sink | None, window_size: int, n_features: int, dtype):
        self.sink = sink
        self.kept: list[WindowCarry] = []
        self.window_size, self.n_features, self.dtype = window_size, n_features, dtype

    def __call__(self, carry: WindowCarry) -> None:
        if len(carry):
            (self.kept.append if self.sink is None else self.sink)(carry)

    def finish(self) -> WindowCarry | None:
        if self.sink is not None:
            return None
        return WindowCarry.concat(self.kept, self.window_size, self.n_features, self.dtype)


__all__ = ["day_summary", "fold_carry"]
