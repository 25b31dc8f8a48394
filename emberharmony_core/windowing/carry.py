"""The carry between partitions: ``WindowCarry`` (per entity its row count and last ``w - 1`` rows) and its
Arrow form, ``CarryCursor`` (walks a carry's batches in key order), entity keys in Arrow and their order check."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def as_array(column) -> pa.Array:
    """One Arrow array (a table's column is chunked), dictionary-encoded values decoded."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def key_array(keys) -> pa.Array:
    """Entity keys as one Arrow array in a type both sides of a merge share: strings as ``string``, integers
    as ``int64``; a series without an entity column (every key None) has the one key 0."""
    if keys is None:
        return pa.array([], pa.int64())
    if isinstance(keys, (pa.Array, pa.ChunkedArray)):
        array = as_array(keys)
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
        self.keys = key_array(keys)
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
        out.keys = key_array(batch.column("entity"))
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


class CarryCursor:
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
