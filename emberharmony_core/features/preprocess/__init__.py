"""Preprocessing with bounded memory: per-partition train statistics -> merged ->
fitted preprocessor -> applied per partition.

    stats = [compute_partition_stats(frame_p, config) for frame_p in partitions]   # one at a time
    pre = fit_preprocessor(merge_stats(stats), config)
    X, names = pre.transform(frame_p)          # per partition, all splits
    pre.summary()                              # per-column report (DataFrame)
    imputer, scaler = pre.to_sklearn()
    FittedPreprocessor.from_json(pre.to_json())

The seed's ``prepare_data`` capabilities (type detection with forced categoricals,
drop columns, STRUCT flattening, target detection, one-hot on the train vocabulary,
median imputation, standard scaling, null-threshold dropping) without ever holding
more than one partition. Medians: exact up to ``median_exact_max_values`` distinct
train values per column, else within relative error ``median_relative_accuracy``
(see :mod:`.sketch`).
"""

from .config import (
    TARGET_NAMES,
    ConfigMismatchError,
    MissingColumnError,
    PreprocessConfig,
    PreprocessError,
    StructFieldsError,
    detect_column_types,
    find_target,
)
from .fitted import FittedPreprocessor, fit_preprocessor
from .sketch import MedianSketch
from .stats import ColumnStats, PreprocessStats, compute_partition_stats, merge_stats
from .structs import flatten_struct_columns

__all__ = [
    "TARGET_NAMES",
    "ConfigMismatchError",
    "MissingColumnError",
    "PreprocessConfig",
    "PreprocessError",
    "StructFieldsError",
    "detect_column_types",
    "find_target",
    "flatten_struct_columns",
    "FittedPreprocessor",
    "fit_preprocessor",
    "MedianSketch",
    "ColumnStats",
    "PreprocessStats",
    "compute_partition_stats",
    "merge_stats",
]
