"""Stride windows for one time partition of several entities, with the previous partition's tail.

The rule (documented for users in the README):

* Windows never cross entities, and never mix splits (a window whose rows carry
  different splits is dropped and counted).
* Each window is produced exactly once: in the partition that holds its LAST row.
  Its first ``window_size - 1`` rows may come from the previous partition's tail.
* Stride phase is anchored at each partition's start: per entity, the window that
  ends on the partition's k-th row (k = 0, 1, ...) is kept when ``k % stride == 0``
  and ``window_size - 1`` earlier rows exist (in this partition or the tail).
  So a partition's windows depend only on its own rows and its predecessor's
  tail, never on how many partitions were materialised together or in which order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .features.windows import stride_windows


@dataclass
class PartitionWindows:
    """Windows of one stride: ``windows`` (m, window_size*F) backend array, and per window its
    ``entity`` (m,), ``end_time`` (m,) int64 ns since epoch UTC, ``split`` (m,) str."""

    windows: object
    entity: np.ndarray
    end_time: np.ndarray
    split: np.ndarray
    candidates: int  # windows made before dropping mixed-split ones
    mixed_split_dropped: int


def first_window_end(tail_rows: int, window_size: int, stride: int) -> int:
    """Partition-local index k of the first kept window end (may be >= the entity's row count)."""
    needed = max(0, window_size - 1 - tail_rows)
    return -(-needed // stride) * stride


def windows_ending_in_partition(rows: int, tail_rows: int, window_size: int, stride: int) -> int:
    """How many windows end in a partition holding ``rows`` rows of an entity after ``tail_rows`` tail rows."""
    first = first_window_end(tail_rows, window_size, stride)
    return 0 if first >= rows else (rows - 1 - first) // stride + 1


def expected_window_counts(current: pd.DataFrame, previous_tail: pd.DataFrame | None, entity_column: str | None,
                           window_size: int, strides: list[int]) -> dict[int, int]:
    """Windows per stride that the rows per entity imply (before dropping mixed-split ones), from counts alone."""
    def sizes(frame):
        if frame is None or frame.empty:
            return pd.Series(dtype="int64")
        return frame.groupby(entity_column, sort=False).size() if entity_column else pd.Series({None: len(frame)})

    rows, tails = sizes(current), sizes(previous_tail)
    return {stride: sum(windows_ending_in_partition(int(n), int(tails.get(entity, 0)), window_size, stride) for entity, n in rows.items())
            for stride in strides}


def tail(frame: pd.DataFrame, entity_column: str | None, rows: int) -> pd.DataFrame:
    """The last ``rows`` rows of each entity (frame sorted by entity, then time)."""
    if rows <= 0 or frame.empty:
        return frame.iloc[0:0]
    if entity_column is None:
        return frame.iloc[-rows:]
    return frame.groupby(entity_column, sort=False, group_keys=False).tail(rows)


def _blocks(entities: np.ndarray):
    """(entity, start, stop) for each run of equal values in a sorted array."""
    if len(entities) == 0:
        return []
    change = np.flatnonzero(entities[1:] != entities[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(entities)]])
    return list(zip(entities[starts], starts, stops))


def partition_windows(current: pd.DataFrame, previous_tail: pd.DataFrame | None, *, feature_columns: list[str],
                      timestamp_column: str, entity_column: str | None, split_column: str = "split",
                      window_size: int, strides: list[int], backend, dtype: str = "float32") -> dict[int, PartitionWindows]:
    """Windows per stride for ``current`` (one partition, sorted by entity then time).

    ``previous_tail`` holds up to ``window_size - 1`` rows per entity from the previous
    partition (same columns), or None for the first partition. The feature matrix goes
    to the backend once; every stride slices that one array.
    """
    parts = [previous_tail, current] if previous_tail is not None and len(previous_tail) else [current]
    is_tail = np.concatenate([np.full(len(p), p is previous_tail) for p in parts])
    rows = pd.concat(parts, ignore_index=True)
    entity_key = rows[entity_column].to_numpy() if entity_column else np.zeros(len(rows), dtype=np.int8)
    order = np.lexsort((~is_tail, entity_key)) if entity_column else np.argsort(~is_tail, kind="stable")
    rows, is_tail, entity_key = rows.iloc[order].reset_index(drop=True), is_tail[order], entity_key[order]

    matrix = backend.asarray(rows[feature_columns].to_numpy(dtype=dtype))
    times = rows[timestamp_column].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    split_values, split_codes = np.unique(rows[split_column].to_numpy(dtype=str), return_inverse=True)
    entity_values = rows[entity_column].to_numpy() if entity_column else np.full(len(rows), None)

    result = {}
    for stride in strides:
        pieces, index_parts, candidates = [], [], 0
        for _, start, stop in _blocks(entity_key):
            tail_rows = int(is_tail[start:stop].sum())
            count = windows_ending_in_partition(stop - start - tail_rows, tail_rows, window_size, stride)
            if count == 0:
                continue
            first_start = start + tail_rows + first_window_end(tail_rows, window_size, stride) - (window_size - 1)
            block = stride_windows(matrix[first_start:stop], window_size, stride, backend)
            made = int(block.shape[0])
            pieces.append(block)
            index_parts.append(first_start + window_size - 1 + stride * np.arange(made))
            candidates += made
        if pieces:
            windows = backend.concat(pieces, axis=0)
            ends = np.concatenate(index_parts)
        else:
            windows = backend.zeros((0, window_size * len(feature_columns)), dtype)
            ends = np.zeros(0, dtype=np.int64)
        # a window is pure when its rows' split codes are all equal
        codes = np.lib.stride_tricks.sliding_window_view(split_codes, window_size)[ends - (window_size - 1)] \
            if len(ends) else np.zeros((0, window_size), dtype=np.int64)
        pure = (codes.min(axis=1) == codes.max(axis=1)) if len(ends) else np.zeros(0, dtype=bool)
        if not pure.all():
            keep = np.flatnonzero(pure)
            windows = backend.take(windows, backend.asarray(keep), axis=0)
            ends = ends[keep]
        result[stride] = PartitionWindows(
            windows=windows,
            entity=entity_values[ends],
            end_time=times[ends],
            split=split_values[split_codes[ends]] if len(ends) else np.zeros(0, dtype=str),
            candidates=candidates,
            mixed_split_dropped=candidates - len(ends),
        )
    return result
