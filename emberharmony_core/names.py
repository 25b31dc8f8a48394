"""The names and defaults every layer shares: one home each (no imports, so any module may use it)."""

from __future__ import annotations

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")
"""The splits, in code order (``train`` is code 0)."""

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
"""Default share of split keys per split, in ``SPLIT_NAMES`` order."""

FLOAT_DTYPES: tuple[str, str] = ("float32", "float64")
"""The dtypes features, windows and PCA compute in."""

CYCLICAL_SUFFIXES: tuple[str, ...] = (
    "sin_hour",
    "cos_hour",
    "sin_dayofweek",
    "cos_dayofweek",
    "sin_day",
    "cos_day",
    "sin_month",
    "cos_month",
)
"""Suffixes of the 8 cyclical feature columns of a datetime column, in column order: ``f"{column}_{suffix}"``."""
