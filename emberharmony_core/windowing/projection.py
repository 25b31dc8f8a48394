"""A chunk's windows as values: gathered in blocks (``gather_windows``), projected with a PCA model
(``project_windows``), the stored window index (``window_index``) and a matrix as Arrow columns (``columns_table``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .rule import SPLITS
from .windower import ChunkRows, ChunkWindows

_BLOCK_BYTES = 8 * 2**20  # windows gathered per block: a few MiB, so a block is made and multiplied in cache


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
