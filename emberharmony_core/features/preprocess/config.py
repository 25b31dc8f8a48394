"""Configuration, errors, column-role detection and STRUCT flattening for preprocessing.

Column roles (what :func:`detect_column_types` returns, one list per role):

``numeric``      int / float columns (bool columns are ``boolean``). Imputed with the
                 train median, then standard-scaled.
``boolean``      bool columns (also object columns holding only True/False). Encoded
                 as 0/1 and then treated exactly like ``numeric``.
``categorical``  string / object / pandas ``category`` columns, plus
                 ``force_categorical_columns``. One-hot encoded like ``pandas.get_dummies``.
``struct``       dict-valued object columns or pyarrow STRUCT columns. Flattened into
                 ``{col}_{field}`` columns (nested fields ``{col}_{a}.{b}``), exactly the
                 names of ``pd.json_normalize(df[col].tolist()).add_prefix(f"{col}_")``;
                 each flattened column then gets its own role.
``datetime``     datetime / date columns: not features here (cyclical features are
                 added upstream; their 8 float columns arrive as ``numeric``). Ignored.
``target``       the target column (given, or found by name, see :data:`TARGET_NAMES`).
                 Kept aside: never imputed, scaled or encoded; passed through.
``excluded``     ``exclude_columns`` and the split column: passed through, never features.
``dropped``      ``drop_columns`` present in the frame.
``other``        anything else (timedelta, lists, binary...): ignored with a log line.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger("emberharmony_core.features.preprocess")

#: Names (case-insensitive, in priority order) that the target heuristic accepts
#: when ``target_column`` is None and ``detect_target`` is True. The seed looked
#: for a column whose name says it is the label; we accept only exact names, never
#: substrings ("label_count" is not a target).
TARGET_NAMES = ("target", "label", "y", "class", "outcome")

ROLES = ("numeric", "boolean", "categorical", "struct", "datetime", "target", "excluded", "dropped", "other")


class PreprocessError(ValueError):
    """Bad input to the preprocessor; the message names the column and the problem."""


class MissingColumnError(PreprocessError, KeyError):
    """A column named in the configuration (target, forced categorical...) is not in the data."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StructFieldsError(PreprocessError):
    """A STRUCT column has different fields in different partitions (``column``, ``fields``: the two field lists,
    ``keys``: the two partitions when :func:`merge_partition_stats` knows them)."""

    def __init__(self, message: str, column: str | None = None, fields=(None, None), keys=(None, None)):
        super().__init__(message)
        self.column, self.fields, self.keys = column, tuple(fields), tuple(keys)


class ColumnTypeDriftError(PreprocessError):
    """A column has one kind (numeric / boolean / categorical) in some partitions and another in others
    (``column``, ``kinds`` and ``types``: both sides; ``keys``: the two partitions when known)."""

    def __init__(
        self, message: str, column: str | None = None, kinds=(None, None), types=(None, None), keys=(None, None)
    ):
        super().__init__(message)
        self.column, self.kinds, self.types, self.keys = column, tuple(kinds), tuple(types), tuple(keys)


def drift_remedy(column: str, source: str | None = None) -> str:
    """What a pipeline user can do about a column whose type differs between partitions: a fix upstream, or
    settings that exist (``PipelineSettings.force_categorical_columns`` / ``drop_columns``). ``source``: the
    STRUCT column a flattened field came from (that is the one to fix or drop)."""
    upstream = source or column
    return (
        f"give the source column {upstream!r} one type in every partition (fix or CAST it upstream, then "
        f"re-materialise the partitions that had the other type from raw_chunk on), or in the pipeline settings "
        f"set force_categorical_columns=[{column!r}] (categories in every partition) or drop_columns=[{upstream!r}] "
        f"(leave it out), then re-materialise preprocess_stats for every partition"
    )


class ConfigMismatchError(PreprocessError):
    """Statistics computed under different configurations cannot be merged or fitted."""


def _tuple(value, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"PreprocessConfig.{name} must be a list of column names, not the string {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class PreprocessConfig:
    """How to detect, encode, impute and scale feature columns (pipeline settings).

    Fields marked (stats) shape the per-partition statistics and must be identical
    for every partition and at fit time; the others (fit) only matter in
    :func:`fit_preprocessor` and may be changed without recomputing statistics.

    Attributes:
        numeric_columns: (stats) numeric feature columns; None = detect from dtypes.
        categorical_columns: (stats) categorical columns; None = detect.
        force_categorical_columns: (stats) columns one-hot encoded even though numeric
            (e.g. integer codes). Each must exist, else :class:`MissingColumnError`.
        drop_columns: (stats) columns removed before anything else (absent ones are
            logged and ignored, as in the seed).
        struct_columns: (stats) STRUCT columns to flatten; None = detect dict-valued
            object columns and pyarrow struct columns.
        exclude_columns: (stats) timestamp / entity / key columns: passed through by
            ``transform_frame``, never features.
        split_column, train_split: (stats) only rows with ``split_column == train_split``
            contribute statistics. ``split_column=None`` means every row is train.
        target_column: (stats) the target; None = heuristic when ``detect_target``.
            A given target that is absent raises :class:`MissingColumnError`.
        detect_target: (stats) use the :data:`TARGET_NAMES` heuristic when no target is given.
        struct_fields: (stats) "error" (default): a STRUCT column whose field set differs
            between partitions raises :class:`StructFieldsError`; "union": fields missing
            from a partition count as null there.
        median_exact_max_values: (stats) a column's median is exact while its train data
            has at most this many distinct values (across all merged partitions); beyond
            that a log-bucket sketch is used (see ``median_relative_accuracy``).
        median_relative_accuracy: (stats) alpha of the sketch: the imputed median m_hat
            satisfies ``|m_hat - m| <= alpha * (|lo| + |hi|) / 2`` where lo, hi are the
            two middle order statistics and m = (lo + hi) / 2 (= ``alpha * |m|`` when lo
            and hi share a sign).
        max_category_values_tracked: (stats) a categorical column with more distinct
            train values than this stops counting them and is dropped as high-cardinality.
        null_threshold: (fit) a column whose train null share is > this is dropped.
            A column that is entirely null in train is always dropped (no median),
            with a logged warning.
        max_categories: (fit) per categorical column keep the most frequent categories
            (ties broken by category order); rows with a dropped (rare) category get all
            zeros, like unseen categories. None = keep all.
        dtype: (fit) dtype of the transformed matrix.
    """

    numeric_columns: tuple[str, ...] | None = None
    categorical_columns: tuple[str, ...] | None = None
    force_categorical_columns: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    struct_columns: tuple[str, ...] | None = None
    exclude_columns: tuple[str, ...] = ()
    split_column: str | None = "split"
    train_split: str = "train"
    target_column: str | None = None
    detect_target: bool = True
    struct_fields: str = "error"
    median_exact_max_values: int = 10_000
    median_relative_accuracy: float = 1e-4
    max_category_values_tracked: int = 10_000
    null_threshold: float = 0.9
    max_categories: int | None = 50
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("numeric_columns", "categorical_columns", "struct_columns"):
            object.__setattr__(self, name, _tuple(getattr(self, name), name))
        for name in ("force_categorical_columns", "drop_columns", "exclude_columns"):
            object.__setattr__(self, name, _tuple(getattr(self, name), name) or ())
        if self.struct_fields not in ("error", "union"):
            raise ValueError(f"struct_fields must be 'error' or 'union', got {self.struct_fields!r}")
        if not 0.0 <= self.null_threshold <= 1.0:
            raise ValueError(f"null_threshold must lie in [0, 1], got {self.null_threshold!r}")
        if not 0.0 < self.median_relative_accuracy < 0.5:
            raise ValueError(f"median_relative_accuracy must lie in (0, 0.5), got {self.median_relative_accuracy!r}")
        if self.median_exact_max_values < 1 or self.max_category_values_tracked < 1:
            raise ValueError("median_exact_max_values and max_category_values_tracked must be >= 1")
        if self.max_categories is not None and self.max_categories < 1:
            raise ValueError(f"max_categories must be >= 1 or None, got {self.max_categories!r}")
        np.dtype(self.dtype)  # raises on a bad dtype name

    STATS_FIELDS = (
        "numeric_columns",
        "categorical_columns",
        "force_categorical_columns",
        "drop_columns",
        "struct_columns",
        "exclude_columns",
        "split_column",
        "train_split",
        "target_column",
        "detect_target",
        "struct_fields",
        "median_exact_max_values",
        "median_relative_accuracy",
        "max_category_values_tracked",
    )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown PreprocessConfig fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(data))

    def stats_dict(self) -> dict[str, Any]:
        full = self.to_dict()
        return {k: full[k] for k in self.STATS_FIELDS}


# --------------------------------------------------------------------------- helpers


def first_non_null(series: pd.Series, limit: int = 1000):
    for value in series.iloc[:limit] if len(series) > limit else series:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            continue
        return value
    non_null = series.dropna()
    return non_null.iloc[0] if len(non_null) else None


def is_arrow_struct(dtype) -> bool:
    if isinstance(dtype, pd.ArrowDtype):
        import pyarrow as pa

        return pa.types.is_struct(dtype.pyarrow_dtype)
    return False


# Complexity: one early return per dtype family; a flat decision table.
def _series_role(series: pd.Series) -> str:  # noqa: C901
    dtype = series.dtype
    if is_arrow_struct(dtype):
        return "struct"
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_role(dtype.pyarrow_dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "other"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    if (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(dtype)
        and not pd.api.types.is_object_dtype(dtype)
    ):
        return "categorical"
    if pd.api.types.is_object_dtype(dtype):
        value = first_non_null(series)
        if value is None:
            return "categorical"  # all null: no evidence; counted as a null categorical column
        if isinstance(value, Mapping):
            return "struct"
        if isinstance(value, (bool, np.bool_)):
            non_null = series.dropna()
            if all(isinstance(v, (bool, np.bool_)) for v in non_null):
                return "boolean"
            return "categorical"
        if (
            isinstance(value, (pd.Timestamp, np.datetime64))
            or hasattr(value, "isoformat")
            and not isinstance(value, str)
        ):
            return "datetime"
        if isinstance(value, (list, tuple, np.ndarray, bytes)):
            return "other"
        return "categorical"
    return "other"


def _arrow_role(pa_type) -> str:
    import pyarrow as pa

    t = pa.types
    if t.is_struct(pa_type):
        return "struct"
    if t.is_boolean(pa_type):
        return "boolean"
    if t.is_integer(pa_type) or t.is_floating(pa_type) or t.is_decimal(pa_type):
        return "numeric"
    if t.is_string(pa_type) or t.is_large_string(pa_type) or t.is_dictionary(pa_type):
        return "categorical"
    if getattr(t, "is_string_view", lambda _: False)(pa_type):
        return "categorical"
    if t.is_timestamp(pa_type) or t.is_date(pa_type) or t.is_time(pa_type):
        return "datetime"
    return "other"


def find_target(columns: Iterable[str], config: PreprocessConfig) -> str | None:
    """The target column: ``config.target_column`` (must exist) or the name heuristic."""
    columns = list(columns)
    if config.target_column is not None:
        if config.target_column not in columns:
            raise MissingColumnError(
                f"target_column {config.target_column!r} is not in the data; columns are {sorted(map(str, columns))}"
            )
        return config.target_column
    if not config.detect_target:
        return None
    lowered: dict[str, str] = {}
    for col in columns:
        lowered.setdefault(str(col).lower(), col)
    for name in TARGET_NAMES:
        if name in lowered and lowered[name] not in config.exclude_columns and lowered[name] not in config.drop_columns:
            return lowered[name]
    return None


# Complexity: one role per branch, in the documented order of precedence; a flat decision table.
def detect_column_types(  # noqa: C901
    data, config: PreprocessConfig | None = None, *, flattened: bool = False
) -> dict[str, list[str]]:
    """Role -> column names (in data order) for a pandas frame or a pyarrow schema.

    Roles are those of :data:`ROLES` (see the module docstring). STRUCT columns are
    reported as ``struct``; their fields get roles after :func:`flatten_struct_columns`.
    Explicit ``numeric_columns`` / ``categorical_columns`` / ``struct_columns`` override
    detection; ``force_categorical_columns`` move a column to ``categorical``.

    ``flattened=True`` says STRUCT columns were already flattened (as
    :func:`compute_partition_stats` does): ``struct_columns`` are then not looked up.

    Raises:
        MissingColumnError: a forced-categorical, explicit or target column is absent.
    """
    config = config or PreprocessConfig()
    if isinstance(data, pd.DataFrame):
        columns = list(data.columns)
        detected = {col: _series_role(data[col]) for col in columns}
    else:
        import pyarrow as pa

        schema = data.schema if hasattr(data, "schema") and not isinstance(data, pa.Schema) else data
        columns = list(schema.names)
        detected = {f.name: _arrow_role(f.type) for f in schema}
    present = set(columns)

    names = ("force_categorical_columns", "numeric_columns", "categorical_columns") + (
        () if flattened else ("struct_columns",)
    )
    for name in names:
        wanted = getattr(config, name) or ()
        missing = [c for c in wanted if c not in present and c not in config.drop_columns]
        if missing and not (not flattened and _may_be_struct_field(missing, detected, config)):
            raise MissingColumnError(f"{name} {missing} not in the data; columns are {sorted(map(str, columns))}")
    absent_drops = [c for c in config.drop_columns if c not in present]
    if absent_drops:
        logger.info("drop_columns %s are not in the data; nothing to drop for them", absent_drops)

    target = find_target([c for c in columns if c not in config.drop_columns], config)
    excluded = set(config.exclude_columns) | ({config.split_column} if config.split_column else set())
    roles: dict[str, list[str]] = {role: [] for role in ROLES}
    for col in columns:
        if col in config.drop_columns:
            role = "dropped"
        elif col == target:
            role = "target"
        elif col in excluded:
            role = "excluded"
        elif col in config.force_categorical_columns:
            role = "categorical"
        elif not flattened and config.struct_columns is not None and col in config.struct_columns:
            role = "struct"
        elif config.numeric_columns is not None and col in config.numeric_columns:
            role = "numeric" if detected[col] != "boolean" else "boolean"
        elif config.categorical_columns is not None and col in config.categorical_columns:
            role = "categorical"
        elif detected[col] == "struct" and config.struct_columns is not None:
            role = "other"  # explicit struct list given and this one is not in it
        elif (
            detected[col] in ("numeric", "boolean")
            and config.numeric_columns is not None
            or detected[col] == "categorical"
            and config.categorical_columns is not None
        ):
            role = "other"
        else:
            role = detected[col]
        roles[role].append(col)
    if roles["other"]:
        logger.info("columns %s are neither numeric, boolean, categorical nor struct; ignored", roles["other"])
    return roles


def _may_be_struct_field(missing: list[str], detected: Mapping[str, str], config: PreprocessConfig) -> bool:
    """Before flattening, explicit columns may name STRUCT fields (``{col}_{field}``)."""
    structs = (
        list(config.struct_columns)
        if config.struct_columns is not None
        else [c for c, r in detected.items() if r == "struct"]
    )
    return all(any(str(m).startswith(f"{s}_") for s in structs) for m in missing)


# --------------------------------------------------------------------------- categories


def category_keys(series: pd.Series) -> tuple[np.ndarray, list[str], bool]:
    """Codes (-1 = null) and canonical string keys of a column's categories.

    Keys are ``str(value)``, except that integral floats become ints ("3", not "3.0":
    an integer column read as float because of nulls keeps its names) and numpy/pandas
    scalars use their Python value. The flag says whether the values were numeric
    (categories then sort numerically, like ``pandas.get_dummies``).
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    values = uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)
    numeric = len(values) > 0 and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in values
    )
    keys = [_key(v) for v in values]
    return np.asarray(codes, dtype=np.int64), keys, numeric


def _key(value) -> str:
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sort_categories(keys: Iterable[str], numeric: bool) -> list[str]:
    keys = list(keys)
    if numeric:
        try:
            return sorted(keys, key=lambda k: (float(k), k))
        except ValueError:
            pass
    return sorted(keys)
