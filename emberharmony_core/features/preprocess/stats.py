"""Per-partition preprocessing statistics on train rows, and their merge.

:func:`compute_partition_stats` reads ONE partition's frame and keeps only train
rows; what it returns is small (per column: counts, float64 mean and sum of
squared deviations, a median sketch, category counts) and mergeable:
:func:`merge_stats` / :meth:`PreprocessStats.merge` combine any number of
partitions. Counts, category counts and median sketches merge exactly (any order,
bit-identical); mean / M2 use Chan's parallel formula in float64, order-independent
up to rounding (relative ~1e-15).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .config import (
    ColumnTypeDriftError,
    ConfigMismatchError,
    MissingColumnError,
    PreprocessConfig,
    PreprocessError,
    StructFieldsError,
    category_keys,
    detect_column_types,
    drift_remedy,
    first_non_null,
)
from .sketch import MedianSketch
from .structs import flatten_struct_columns

logger = logging.getLogger("emberharmony_core.features.preprocess")

FORMAT = "emberharmony.preprocess.stats/1"


@dataclass
class ColumnStats:
    """Statistics of one feature column over train rows.

    ``kind`` is "numeric", "boolean" or "categorical". ``n_rows`` counts train rows
    (null or not), ``null_count`` the null ones. Numeric/boolean: ``mean`` and ``m2``
    (sum of squared deviations) of the non-null values, float64; ``min``/``max``;
    ``sketch`` for the median. Categorical: ``categories`` (canonical key -> count),
    ``numeric_categories`` (sort numerically), ``overflow`` (more distinct values
    than ``max_category_values_tracked``: counts discarded). ``source`` is the STRUCT
    column a flattened field came from, else None. ``dtype``: the data types seen (pandas dtype names,
    sorted, "|"-joined; informational, for messages: a nullable integer column reads as float64 in
    chunks that hold a null).
    """

    kind: str
    n_rows: int = 0
    null_count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float | None = None
    max: float | None = None
    sketch: MedianSketch | None = None
    categories: dict[str, int] | None = None
    numeric_categories: bool = True
    overflow: bool = False
    source: str | None = None
    dtype: str | None = None

    @property
    def count(self) -> int:
        return self.n_rows - self.null_count

    def numeric_sketch(self) -> MedianSketch:
        """The median sketch of a numeric / boolean column (always set for those kinds)."""
        assert self.sketch is not None, f"{self.kind} column statistics without a median sketch"
        return self.sketch

    def category_counts(self) -> dict[str, int]:
        """The category counts of a categorical column (always set for that kind; empty after overflow)."""
        assert self.categories is not None, "categorical column statistics without category counts"
        return self.categories

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "n_rows": self.n_rows,
            "null_count": self.null_count,
            "source": self.source,
        }
        if self.kind == "categorical":
            out.update(categories=self.categories, numeric_categories=self.numeric_categories, overflow=self.overflow)
        else:
            out.update(mean=self.mean, m2=self.m2, min=self.min, max=self.max, sketch=self.numeric_sketch().to_dict())
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnStats:
        data = dict(data)
        if data.get("sketch") is not None:
            data["sketch"] = MedianSketch.from_dict(data["sketch"])
        if data.get("categories") is not None:
            data["categories"] = {str(k): int(v) for k, v in data["categories"].items()}
        return cls(**data)


def _numeric_stats(values: np.ndarray, n_rows: int, config: PreprocessConfig, name: str, kind: str) -> ColumnStats:
    x = values[~np.isnan(values)]
    if not np.isfinite(x).all():
        raise PreprocessError(
            f"numeric column {name!r} has infinite values in train rows; replace them (or null them) upstream"
        )
    st = ColumnStats(kind=kind, n_rows=n_rows, null_count=n_rows - len(x))
    if len(x):
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, naming the column
            st.mean = float(np.mean(x))
            st.m2 = float(np.sum(np.square(x - st.mean)))
        st.min, st.max = float(x.min()), float(x.max())
        if not (np.isfinite(st.mean) and np.isfinite(st.m2)):  # finite values whose mean / squares overflow float64
            raise PreprocessError(
                f"numeric column {name!r}: the mean or variance of its train values overflows float64 "
                f"(values between {st.min:.3g} and {st.max:.3g}); rescale the column upstream"
            )
    st.sketch = MedianSketch.from_values(x, config.median_relative_accuracy, config.median_exact_max_values)
    return st


def numeric_values(series: pd.Series) -> np.ndarray:
    """float64 values of a numeric / boolean column, NaN for nulls."""
    if series.dtype == object:  # object booleans (True/False/None)
        return np.array([np.nan if pd.isna(v) else float(v) for v in series.tolist()], dtype=np.float64)
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _categorical_stats(series: pd.Series, config: PreprocessConfig) -> ColumnStats:
    codes, keys, numeric = category_keys(series)
    st = ColumnStats(
        kind="categorical", n_rows=len(series), null_count=int((codes < 0).sum()), numeric_categories=numeric
    )
    counts = np.bincount(codes[codes >= 0], minlength=len(keys))
    merged: dict[str, int] = {}
    for key, count in zip(keys, counts.tolist(), strict=True):  # distinct raw values may share a key (1 and 1.0)
        merged[key] = merged.get(key, 0) + int(count)
    if len(merged) > config.max_category_values_tracked:
        st.overflow, st.categories = True, {}
    else:
        st.categories = merged
    return st


@dataclass
class PreprocessStats:
    """Mergeable statistics of train rows: what :func:`fit_preprocessor` needs.

    ``columns`` maps each feature column (after STRUCT flattening) to its
    :class:`ColumnStats`; ``struct_fields`` maps each STRUCT column to its sorted
    field list (None: no partition held a non-null value yet); ``target`` is the
    target column (None if none); ``n_train_rows`` / ``n_partitions`` count what was
    merged; ``config`` holds the (stats) fields of the :class:`PreprocessConfig` used.
    """

    config: dict[str, Any]
    columns: dict[str, ColumnStats] = field(default_factory=dict)
    struct_fields: dict[str, list[str] | None] = field(default_factory=dict)
    target: str | None = None
    ignored: dict[str, str] = field(default_factory=dict)  # column -> role (datetime / other / dropped)
    n_train_rows: int = 0
    n_partitions: int = 1

    # ------------------------------------------------------------------ merge
    def merge(self, other: PreprocessStats) -> PreprocessStats:
        """Combined statistics of both (inputs unchanged). Order does not matter."""
        if self.config != other.config:
            diff = sorted(k for k in set(self.config) | set(other.config) if self.config.get(k) != other.config.get(k))
            raise ConfigMismatchError(f"cannot merge preprocessing statistics computed with different settings: {diff}")
        if self.target != other.target and self.target is not None and other.target is not None:
            raise PreprocessError(f"partitions disagree on the target column: {self.target!r} vs {other.target!r}")
        out = PreprocessStats(
            config=self.config,
            target=self.target or other.target,
            n_train_rows=self.n_train_rows + other.n_train_rows,
            n_partitions=self.n_partitions + other.n_partitions,
        )
        out.ignored = {**other.ignored, **self.ignored}
        union = self.config.get("struct_fields") == "union"
        for col in sorted(set(self.struct_fields) | set(other.struct_fields)):
            a, b = self.struct_fields.get(col), other.struct_fields.get(col)
            if a is None or b is None or a == b:
                out.struct_fields[col] = a if b is None else b
            elif union:
                out.struct_fields[col] = sorted(set(a) | set(b))
            else:
                raise StructFieldsError(
                    f"struct column {col!r} has different fields in different partitions: "
                    f"only in one: {sorted(set(a) - set(b))}, only in the other: {sorted(set(b) - set(a))} "
                    f"(fields {a} vs {b}); {_struct_remedy(col)}",
                    column=col,
                    fields=(a, b),
                )
        for col in sorted(set(self.columns) | set(other.columns)):
            mine, theirs = _both_sides(self.columns.get(col), other.columns.get(col), self, other)
            merged = _merge_column(col, mine, theirs)
            if merged.kind == "categorical":
                _check_category_limit(merged, int(self.config["max_category_values_tracked"]))
            out.columns[col] = merged
        for col in out.struct_fields:
            # a STRUCT column that was all null in some partition looked like a plain
            # (null) column there; its fields carry its statistics.
            if col in out.columns and out.columns[col].count == 0:
                del out.columns[col]
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config,
            "target": self.target,
            "ignored": self.ignored,
            "n_train_rows": self.n_train_rows,
            "n_partitions": self.n_partitions,
            "struct_fields": self.struct_fields,
            "columns": {k: v.to_dict() for k, v in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessStats:
        if data.get("format") != FORMAT:
            raise ValueError(f"not preprocessing statistics (format {data.get('format')!r}, expected {FORMAT!r})")
        return cls(
            config=data["config"],
            target=data["target"],
            ignored=dict(data["ignored"]),
            n_train_rows=int(data["n_train_rows"]),
            n_partitions=int(data["n_partitions"]),
            struct_fields=dict(data["struct_fields"]),
            columns={k: ColumnStats.from_dict(v) for k, v in data["columns"].items()},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> PreprocessStats:
        return cls.from_dict(json.loads(text))


def _both_sides(
    mine: ColumnStats | None, theirs: ColumnStats | None, self: PreprocessStats, other: PreprocessStats
) -> tuple[ColumnStats, ColumnStats]:
    """A column's statistics on both sides of a merge; a side without the column: all null there."""
    if mine is None:
        assert theirs is not None, "a column on neither side"
        return _absent(theirs, self.n_train_rows), theirs
    return mine, theirs if theirs is not None else _absent(mine, other.n_train_rows)


def _absent(like: ColumnStats, n_rows: int) -> ColumnStats:
    """A column missing from a partition (e.g. a union-mode STRUCT field): all null there."""
    st = ColumnStats(
        kind=like.kind, n_rows=n_rows, null_count=n_rows, source=like.source, numeric_categories=like.numeric_categories
    )
    if like.kind == "categorical":
        st.categories = {}
    else:
        like_sketch = like.numeric_sketch()
        st.sketch = MedianSketch(like_sketch.alpha, like_sketch.max_exact)
    return st


def _merge_column(name: str, a: ColumnStats, b: ColumnStats) -> ColumnStats:
    if a.kind != b.kind:
        # A column with no non-null train value in one partition carries no type evidence.
        if a.count == 0 and b.count > 0:
            a = _absent(b, a.n_rows)
        elif b.count == 0 and a.count > 0:
            b = _absent(a, b.n_rows)
        elif a.count == 0 and b.count == 0:
            a, b = (a, _absent(a, b.n_rows)) if a.kind <= b.kind else (_absent(b, a.n_rows), b)
        else:
            raise ColumnTypeDriftError(
                f"column {name!r} is {_kind_text(a)} in some partitions and {_kind_text(b)} in others; "
                f"{drift_remedy(name, a.source or b.source)}",
                column=name,
                kinds=(a.kind, b.kind),
                types=(a.dtype, b.dtype),
            )
    out = ColumnStats(
        kind=a.kind,
        n_rows=a.n_rows + b.n_rows,
        null_count=a.null_count + b.null_count,
        source=a.source or b.source,
        dtype=_merge_dtype(a, b),
    )
    if a.kind == "categorical":
        out.numeric_categories = (a.numeric_categories or a.count == 0) and (b.numeric_categories or b.count == 0)
        out.overflow = a.overflow or b.overflow
        if not out.overflow:
            cats = dict(a.category_counts())
            for k, v in b.category_counts().items():
                cats[k] = cats.get(k, 0) + v
            out.categories = cats
        else:
            out.categories = {}
        return out
    na, nb = a.count, b.count
    n = na + nb
    if n:
        delta = b.mean - a.mean
        out.mean = a.mean + delta * nb / n if na else b.mean
        out.m2 = a.m2 + b.m2 + delta * delta * na * nb / n
        out.min = min(v for v in (a.min, b.min) if v is not None)
        out.max = max(v for v in (a.max, b.max) if v is not None)
    out.sketch = a.numeric_sketch().merge(b.numeric_sketch())
    return out


def _kind_text(st: ColumnStats) -> str:
    return st.kind + (f" ({st.dtype})" if st.dtype else "")


def _merge_dtype(a: ColumnStats, b: ColumnStats) -> str | None:
    """The dtypes of the sides that hold values (of both when neither does), sorted: order-free."""
    sides = [st for st in (a, b) if st.count > 0] or [a, b]
    names = sorted({t for st in sides for t in (st.dtype or "").split("|") if t})
    return "|".join(names) or None


def _struct_remedy(column: str) -> str:
    return (
        f"give {column!r} the same fields in every partition upstream (a STRUCT type, or null for a missing "
        f"field; then re-materialise the partitions that differed from raw_chunk on), or set "
        f"drop_columns=[{column!r}], or struct_fields='union' (a field missing from a partition is then null "
        f"there), in the pipeline settings and re-materialise preprocess_stats for every partition"
    )


def type_name(series: pd.Series) -> str:
    """A column's type for messages: its dtype, and for object columns the Python type of the first value."""
    if series.dtype == object:
        value = first_non_null(series)
        return "object" if value is None else f"object of {type(value).__name__}"
    return str(series.dtype)


def merge_partition_stats(named_stats: Iterable[tuple[str, PreprocessStats]]) -> PreprocessStats:
    """Merge ``(partition key, statistics)`` pairs in the order given (one partition in memory at a time: pass a
    generator), naming partitions when they do not fit together.

    A column whose kind differs (numeric in one partition, text in another), a STRUCT column whose fields
    differ, or statistics computed with other settings raise the error :meth:`PreprocessStats.merge` raises,
    reworded to name the column, BOTH partitions (the first one that showed the other kind / fields, and the
    one being merged), both types or field sets, and remedies that exist as pipeline settings. The stored
    statistics, with ``emberharmony_core.layout``'s helpers:

        merged = merge_partition_stats((k, load_preprocess_stats(store, k)) for k in preprocess_stats_keys(store))
    """
    merged: PreprocessStats | None = None
    kinds: dict[str, tuple[str, ColumnStats]] = {}  # column -> (first partition with values, its stats)
    fields: dict[str, tuple[str, list[str]]] = {}  # struct column -> (first partition with fields, them)
    first_key = None
    for key, stats in named_stats:
        if merged is None:
            merged, first_key = stats, key
        else:
            try:
                merged = merged.merge(stats)
            except ColumnTypeDriftError as exc:
                col = exc.column
                assert col is not None  # PreprocessStats.merge names the column
                before_key, before = kinds.get(col, (first_key, merged.columns.get(col)))
                now = stats.columns.get(col)
                remedy = drift_remedy(col, (before.source if before else None) or (now.source if now else None))
                raise ColumnTypeDriftError(
                    f"column {col!r} changes type between partitions: {_kind_text(before) if before else exc.kinds[0]} "
                    f"in partition {before_key} but {_kind_text(now) if now else exc.kinds[1]} in partition {key}; "
                    f"{remedy}",
                    column=col,
                    kinds=exc.kinds,
                    types=exc.types,
                    keys=(before_key, key),
                ) from None
            except StructFieldsError as exc:
                col = exc.column
                assert col is not None  # PreprocessStats.merge names the column
                fields_key, fields_before = fields.get(col, (first_key, exc.fields[0]))
                fields_now = stats.struct_fields.get(col) or exc.fields[1]
                raise StructFieldsError(
                    f"struct column {col!r} has different fields in partition {fields_key} ({fields_before}) and in "
                    f"partition {key} ({fields_now}): only in {fields_key}: "
                    f"{sorted(set(fields_before) - set(fields_now))}, only in "
                    f"{key}: {sorted(set(fields_now) - set(fields_before))}; {_struct_remedy(col)}",
                    column=col,
                    fields=(fields_before, fields_now),
                    keys=(fields_key, key),
                ) from None
            except ConfigMismatchError as exc:
                raise ConfigMismatchError(
                    f"preprocess_stats of partition {key} do not fit those of the partitions before it (from "
                    f"{first_key}): {exc}; the settings changed since: re-materialise preprocess_stats for every "
                    f"partition"
                ) from None
        _note_first_seen(key, stats, kinds, fields)
    if merged is None:
        raise ValueError("merge_partition_stats needs at least one (partition key, PreprocessStats) pair")
    return merged


def _note_first_seen(
    key: str,
    stats: PreprocessStats,
    kinds: dict[str, tuple[str, ColumnStats]],
    fields: dict[str, tuple[str, list[str]]],
) -> None:
    """Record ``key`` as the first partition with values of a column / the fields of a struct column."""
    for col, st in stats.columns.items():
        if st.count > 0 and col not in kinds:
            kinds[col] = (key, st)
    for col, names in stats.struct_fields.items():
        if names is not None and col not in fields:
            fields[col] = (key, names)


def merge_stats(stats: Iterable[PreprocessStats]) -> PreprocessStats:
    """Merge any number of partitions' statistics (at least one).

    Partitions are merged in a canonical order (by their JSON), so the float64
    moments are bit-identical whatever order ``stats`` comes in.
    """
    items = sorted(stats, key=lambda s: s.to_json())
    if not items:
        raise ValueError("merge_stats needs at least one PreprocessStats")
    out = items[0]
    for item in items[1:]:
        out = out.merge(item)
    return out


def _check_category_limit(st: ColumnStats, limit: int):
    if not st.overflow and len(st.category_counts()) > limit:
        st.overflow, st.categories = True, {}


def compute_partition_stats(frame: pd.DataFrame, config: PreprocessConfig | None = None) -> PreprocessStats:
    """Statistics of one partition's train rows (``frame[split_column] == train_split``).

    Steps: drop ``drop_columns``; flatten STRUCT columns (``{col}_{field}``); detect
    roles (:func:`detect_column_types`); per numeric/boolean column count, nulls,
    mean, M2, min, max and a median sketch; per categorical column category counts.
    Validation and test rows are never read beyond the split column.

    Raises:
        MissingColumnError: target / forced-categorical / explicit column absent, or
            the split column is absent (``split_column=None`` treats all rows as train).
        PreprocessError: infinite values in a numeric train column.
    """
    config = config or PreprocessConfig()
    if config.split_column is not None:
        if config.split_column not in frame.columns:
            raise MissingColumnError(
                f"split column {config.split_column!r} is not in the data (columns {sorted(map(str, frame.columns))}); "
                f"set split_column=None if every row is train"
            )
        train = frame.loc[frame[config.split_column].to_numpy() == config.train_split]
    else:
        train = frame
    present_drops = [c for c in config.drop_columns if c in train.columns]
    top_roles = detect_column_types(train, config)  # validates names before flattening
    if present_drops:  # DataFrame.drop copies every column, even for nothing to drop
        train = train.drop(columns=present_drops)
    flat, fields = flatten_struct_columns(train, top_roles["struct"])
    roles = detect_column_types(flat, config, flattened=True)
    sources = {}
    for col in top_roles["struct"]:
        for f in fields.get(col, []):
            sources[f"{col}_{f}"] = col

    out = PreprocessStats(
        config=config.stats_dict(), target=roles["target"][0] if roles["target"] else None, n_train_rows=len(train)
    )
    out.struct_fields = {col: (fields.get(col) or None) for col in top_roles["struct"]}
    out.ignored = {c: "dropped" for c in present_drops}
    out.ignored.update({c: "datetime" for c in roles["datetime"]})
    out.ignored.update({c: "other" for c in roles["other"] + roles["struct"]})
    n = len(flat)
    for col in roles["numeric"] + roles["boolean"]:
        kind = "numeric" if col in roles["numeric"] else "boolean"
        st = _numeric_stats(numeric_values(flat[col]), n, config, col, kind)
        st.source, st.dtype = sources.get(col), type_name(flat[col])
        out.columns[col] = st
    for col in roles["categorical"]:
        st = _categorical_stats(flat[col], config)
        st.source, st.dtype = sources.get(col), type_name(flat[col])
        out.columns[col] = st
    return out
