"""Split keys for series without an entity column: the time block a row falls in (``split_block``).

Without an entity (or ``split_key``) column the split key is the partition date, so a window whose
rows span midnight mixes two days' splits whenever those differ, and is dropped. Hashing a longer
time block instead keeps more windows whole: only windows crossing a block boundary can mix splits.

The rule: with ``block`` a positive duration, a row at time ``t`` (UTC) falls in block
``floor((t - ORIGIN) / block)``, ``ORIGIN = 1970-01-05 00:00 UTC`` (a Monday), and its split key is the
block's start as text: ``YYYY-MM-DD`` when ``block`` is a whole number of days (so ``"7d"`` blocks are
ISO weeks, Monday to Sunday, keyed by their Monday, and ``"1d"`` gives exactly the partition-date key
of daily UTC partitions), else ``YYYY-MM-DDTHH:MM:SS``. The key depends on the row's time alone, never
on partitioning or chunking, so every rerun, engine and partition size gives the same split.

The trade-off (fewer windows dropped, lumpier split shares) and measured drops: docs/windowing.md.

    keys = split_block_keys(frame["ts"], "7d")      # (n,) object array of "2026-01-05", ...
    frame["split"] = assign_split(keys)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..windowing import parse_duration

ORIGIN = pd.Timestamp("1970-01-05", tz="UTC")  # a Monday: 7-day blocks are ISO weeks
_DAY_NS = 86_400 * 10**9


def parse_block(block) -> int:
    """``split_block`` as int64 nanoseconds: a positive duration (``"7d"``, ``"1d"``, ``"12h"``); else raises
    naming the setting."""
    if block is None:
        raise ValueError("split_block must be a duration such as '7d' or '1d', got None")
    nanoseconds = parse_duration("split_block", block)
    assert nanoseconds is not None  # parse_duration returns None only for None, refused above
    return nanoseconds


def _nanoseconds(times) -> np.ndarray:
    """(n,) int64 ns since the epoch (UTC) of datetimes (tz-aware, or naive = UTC) or int64 ns values."""
    if isinstance(times, (pd.Series, pd.Index)) and not pd.api.types.is_integer_dtype(times.dtype):
        values = pd.DatetimeIndex(times)
        if values.tz is not None:
            values = values.tz_convert("UTC").tz_localize(None)
        if values.hasnans:
            raise ValueError("split_block needs a timestamp on every row; the timestamp column holds nulls")
        return values.as_unit("ns").asi8
    array = np.asarray(times)
    if np.issubdtype(array.dtype, np.datetime64):
        if np.isnat(array).any():
            raise ValueError("split_block needs a timestamp on every row; the timestamp column holds nulls")
        return array.astype("datetime64[ns]").astype(np.int64)
    return array.astype(np.int64, copy=False)


def split_block_index(times, block) -> np.ndarray:
    """(n,) int64: the block each row falls in, ``floor((t - ORIGIN) / block)``."""
    return (_nanoseconds(times) - ORIGIN.value) // parse_block(block)


def split_block_keys(times, block) -> np.ndarray:
    """(n,) object array of split keys: the start of each row's time block as text (see the module docstring).

    ``times``: a pandas Series / Index of datetimes (tz-aware, or naive read as UTC), a datetime64 array,
    or int64 nanoseconds since the epoch. Formatting is done once per distinct block."""
    size = parse_block(block)
    index = (_nanoseconds(times) - ORIGIN.value) // size
    if index.size == 0:
        return np.zeros(0, dtype=object)
    blocks, inverse = np.unique(index, return_inverse=True)
    starts = pd.to_datetime(ORIGIN.value + blocks * size, utc=True)
    text = starts.strftime("%Y-%m-%d" if size % _DAY_NS == 0 else "%Y-%m-%dT%H:%M:%S")
    return np.asarray(text, dtype=object)[inverse.reshape(-1)]


__all__ = ["ORIGIN", "parse_block", "split_block_index", "split_block_keys"]
