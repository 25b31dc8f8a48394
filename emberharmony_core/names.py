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

RAW, SPLIT, CYCLICAL, FEATURES = "raw_chunk", "split_data", "cyclical_features", "features"
PREPROCESS_STATS, PREPROCESSOR = "preprocess_stats", "preprocessor"  # a day's train statistics; their global fit
STRIDE_WINDOWS, PROJECTED, PCA_STATS = "stride_windows", "projected_windows", "pca_stats"
PCA_MODELS = "pca_models"
WINDOW_TAILS, WINDOW_CARRY = "window_tails", "window_carry"  # a day's own summary; the state after a day
# the BigQuery write-back (emberharmony_assets.assets.export): a table each, nothing in the store
EXPORT_FEATURES, EXPORT_PROJECTED = "bigquery_features", "bigquery_projected_windows"
"""The assets' names (their keys in Dagster; what each stores: ``emberharmony_core.layout``)."""

DEFAULT_ROWS_PER_CHUNK = 100_000
"""Rows read and processed at a time: what bounds a run's memory (the ``settings`` resource's ``rows_per_chunk``)."""
