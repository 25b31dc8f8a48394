"""The windowing rule in numbers: split codes, duration settings (``max_gap``), the closed-form window count
and one series' window starts (the rule itself: the package docstring, ``emberharmony_core.windowing``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..names import SPLIT_NAMES

SPLITS = SPLIT_NAMES
TRAIN = 0  # code of "train" in SPLITS


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


def series_starts(n_rows: int, window_size: int, stride: int, first_row: int = 0) -> np.ndarray:
    """Starts (into ``rows``) of the rule's stride windows over one series whose ``rows[0]`` is row ``first_row``."""
    return np.arange((-first_row) % stride, max(0, n_rows - window_size + 1), stride, dtype=np.int64)
