"""The fitted preprocessor: built from merged statistics, applied per partition.

Output layout (deterministic, independent of partition or column order): numeric
and boolean features sorted by name, then for each categorical column (sorted by
name) its one-hot columns ``{col}_{category}`` in ``pandas.get_dummies`` order
(categories sorted; numerically when the values were numbers).

Numeric values: nulls -> train median, then ``(x - mean_) / scale_`` where
``mean_`` / ``var_`` are those of the *imputed* train column (as
``Pipeline([SimpleImputer("median"), StandardScaler()])`` fitted on the train rows),
``scale_ = sqrt(var_)`` (ddof 0) and 1 for constant columns (scikit-learn's rule).
Categorical values: 1.0 in the column of the row's category; nulls, unseen categories
and categories cut by ``max_categories`` give all zeros.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa

from .config import (
    ConfigMismatchError,
    MissingColumnError,
    PreprocessConfig,
    PreprocessError,
    category_keys,
    sort_categories,
)
from .stats import PreprocessStats, numeric_values
from .structs import flatten_struct_columns

logger = logging.getLogger("emberharmony_core.features.preprocess")

FORMAT = "emberharmony.preprocess.fitted/1"


def _constant_mask(var: np.ndarray, mean: np.ndarray, n: np.ndarray) -> np.ndarray:
    """scikit-learn's ``_is_constant_feature`` (StandardScaler sets their scale to 1)."""
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * mean * eps) ** 2


@dataclass
class FittedPreprocessor:
    """Median imputation + standard scaling + one-hot encoding, fitted on train statistics.

    Attributes (scikit-learn style, NumPy arrays over ``numeric_columns_``):
        numeric_columns_: kept numeric + boolean features, sorted.
        statistics_: medians used for imputation (float64).
        mean_, var_, scale_: of the imputed train columns (float64).
        n_samples_seen_: train rows the scaler statistics cover.
        categories_: categorical column -> kept categories (canonical keys, output order).
        feature_names_: output column names, in output order.
        dropped_: column -> reason, for every feature column that was dropped.
        columns_: per-column records behind :meth:`summary`.
    """

    config: PreprocessConfig
    numeric_columns_: list[str]
    statistics_: np.ndarray
    mean_: np.ndarray
    var_: np.ndarray
    scale_: np.ndarray
    n_samples_seen_: int
    categories_: dict[str, list[str]]
    struct_fields_: dict[str, list[str] | None]
    sources_: dict[str, str]
    target_: str | None
    dropped_: dict[str, str]
    columns_: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------------ layout
    @property
    def feature_names_(self) -> list[str]:
        names = list(self.numeric_columns_)
        for col, cats in self.categories_.items():
            names.extend(f"{col}_{c}" for c in cats)
        return names

    @property
    def n_features_out_(self) -> int:
        return len(self.numeric_columns_) + sum(len(c) for c in self.categories_.values())

    @property
    def passthrough_columns_(self) -> list[str]:
        cols = list(self.config.exclude_columns)
        for extra in (self.config.split_column, self.target_):
            if extra is not None and extra not in cols:
                cols.append(extra)
        return cols

    # ------------------------------------------------------------------ apply
    def _column(self, flat: pd.DataFrame, col: str) -> pd.Series | None:
        if col in flat.columns:
            return flat[col]
        if col in self.sources_:  # a STRUCT field absent from this partition: all null
            return None
        raise MissingColumnError(f"feature column {col!r} (seen at fit time) is not in the frame to transform")

    def flatten(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the fitted STRUCT columns flattened (``{col}_{field}``), e.g. to
        feed ``frame[numeric_columns_]`` to the scikit-learn objects of :meth:`to_sklearn`."""
        return flatten_struct_columns(frame, [c for c in self.struct_fields_ if c in frame.columns])[0]

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Transform every row of one partition (all splits).

        Returns ``(X, names)``: X of shape (n_rows, n_features_out_) in
        ``config.dtype`` (float32 by default), names = :attr:`feature_names_`.
        Extra columns in the frame are ignored.
        """
        flat = self.flatten(frame)
        n = len(flat)
        out = np.zeros((n, self.n_features_out_), dtype=np.dtype(self.config.dtype), order="F")  # filled by column
        for j, col in enumerate(self.numeric_columns_):
            series = self._column(flat, col)
            if series is None:
                x = np.full(n, self.statistics_[j])
            else:
                try:
                    x = numeric_values(series)
                except (TypeError, ValueError) as exc:
                    raise PreprocessError(f"numeric column {col!r} has non-numeric values ({exc})") from None
                x = np.where(np.isnan(x), self.statistics_[j], x)
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below, naming the column
                out[:, j] = (x - self.mean_[j]) / self.scale_[j]
        bad = ~np.isfinite(out[:, : len(self.numeric_columns_)])
        if bad.any():  # +-inf in the input, or a value beyond the output dtype's range: never into windows
            raise PreprocessError(
                "; ".join(
                    f"column {col!r}: {int(bad[:, j].sum())} value(s) not finite after imputing and scaling to "
                    f"{self.config.dtype} (first: {frame_value(flat, col, int(np.flatnonzero(bad[:, j])[0]))!r})"
                    for j, col in enumerate(self.numeric_columns_)
                    if bad[:, j].any()
                )
                + " -- fix or filter them in the source (NULL is imputed), "
                "or use dtype float64 for values beyond float32"
            )
        offset = len(self.numeric_columns_)
        for col, cats in self.categories_.items():
            series = self._column(flat, col)
            if series is not None and len(cats):
                codes, keys, _ = category_keys(series)
                index = {c: i for i, c in enumerate(cats)}
                lut = np.array([index.get(k, -1) for k in keys] + [-1], dtype=np.int64)
                pos = lut[codes]  # code -1 (null) picks the trailing -1
                rows = np.flatnonzero(pos >= 0)
                out[rows, offset + pos[rows]] = 1.0
            offset += len(cats)
        return out, self.feature_names_

    def transform_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Passthrough columns present in ``frame`` (``exclude_columns``, split, target),
        then the feature columns of :meth:`transform`; same index as ``frame``."""
        X, names = self.transform(frame)
        keep = [c for c in self.passthrough_columns_ if c in frame.columns]
        features = pd.DataFrame(X, columns=names, index=frame.index)
        return pd.concat([frame[keep], features], axis=1) if keep else features

    def transform_arrow(self, frame: pd.DataFrame) -> tuple[pa.Table, np.ndarray]:
        """:meth:`transform_frame`'s columns as an Arrow table, and the (n_rows, n_features_out_) matrix X its
        feature columns were made from (shared memory, no copy): what the windows pass writes and windows."""
        import pyarrow as pa

        X, names = self.transform(frame)
        keep = [c for c in self.passthrough_columns_ if c in frame.columns]
        first = pa.Table.from_pandas(frame[keep], preserve_index=False) if keep else None
        arrays = (first.columns if first is not None else []) + [pa.array(X[:, j]) for j in range(X.shape[1])]
        return pa.Table.from_arrays(arrays, names=[*keep, *names]), X

    # ------------------------------------------------------------------ reporting
    def summary_records(self) -> list[dict[str, Any]]:
        """One dict per input column: column, source, kind, status (kept / dropped /
        ignored / target), reason, n_train, null_share, mean, std (non-null train
        values, ddof 0), median (the imputed value), median_exact, median_error_bound,
        min, max, n_categories, n_categories_kept, n_outputs."""
        return [dict(r) for r in self.columns_]

    def summary(self) -> pd.DataFrame:
        """:meth:`summary_records` as a DataFrame (``.to_markdown()``-ready)."""
        out = pd.DataFrame.from_records(self.columns_, columns=_SUMMARY_COLUMNS)
        for col in ("n_train", "n_categories", "n_categories_kept", "n_outputs"):
            out[col] = out[col].astype("Int64")
        return out

    def to_sklearn(self):
        """``(SimpleImputer(strategy="median"), StandardScaler())`` fitted-equivalent on
        ``numeric_columns_``: chained on ``frame[numeric_columns_]`` (numeric dtype) their
        ``transform`` equals :meth:`transform`'s numeric block."""
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import StandardScaler

        cols = list(self.numeric_columns_)
        dummy = pd.DataFrame(np.zeros((2, len(cols))), columns=cols)
        imputer = SimpleImputer(strategy="median").fit(dummy)
        imputer.statistics_ = self.statistics_.astype(np.float64).copy()
        scaler = StandardScaler().fit(dummy.to_numpy())  # as in a Pipeline: it sees the imputer's array
        scaler.mean_ = self.mean_.copy()
        scaler.var_ = self.var_.copy()
        scaler.scale_ = self.scale_.copy()
        scaler.n_samples_seen_ = int(self.n_samples_seen_)
        return imputer, scaler

    def to_sklearn_pipeline(self, output: str = "default"):
        """The whole preprocessor as a fitted scikit-learn ``Pipeline`` whose ``transform(frame)`` equals
        ``self.transform(frame)[0]`` (same columns, order, dtype; ``get_feature_names_out()`` is
        :attr:`feature_names_`). Steps (see ``emberharmony_core.features.sklearn_api.preprocessor_pipeline``):

        * ``"flatten"``: ``StructFlattener``, the fitted STRUCT columns flattened to ``{col}_{field}`` (as
          :meth:`flatten`), the flat feature columns selected; a STRUCT field absent from the frame is all null.
        * ``"encode"``: a ``ColumnTransformer``: numeric and boolean columns through
          ``SimpleImputer(strategy="median")`` + ``StandardScaler()`` with our statistics; categorical columns
          through ``OneHotEncoder(categories=<our kept categories, our order>, handle_unknown="ignore")``.
          It needs **flat** input: ``pipeline["encode"].transform(self.flatten(frame))`` (float64).
        * ``"cast"``: to ``config.dtype``.

        ``output="pandas"`` makes every step return DataFrames (columns :attr:`feature_names_`, the frame's
        index); set it here rather than with ``set_output`` on the returned (already fitted) pipeline.

        Differences: ours raises on +-inf (or values beyond the output dtype) after scaling; scikit-learn's
        objects pass them through. :meth:`to_sklearn` (imputer and scaler only) is unchanged.
        """
        from ..sklearn_api import preprocessor_pipeline  # scikit-learn only when converting (as to_sklearn)

        return preprocessor_pipeline(self, output)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "numeric_columns_": list(self.numeric_columns_),
            "statistics_": self.statistics_.tolist(),
            "mean_": self.mean_.tolist(),
            "var_": self.var_.tolist(),
            "scale_": self.scale_.tolist(),
            "n_samples_seen_": int(self.n_samples_seen_),
            "categories_": {k: list(v) for k, v in self.categories_.items()},
            "struct_fields_": self.struct_fields_,
            "sources_": self.sources_,
            "target_": self.target_,
            "dropped_": self.dropped_,
            "columns_": [{k: _jsonable(v) for k, v in r.items()} for r in self.columns_],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedPreprocessor:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a fitted preprocessor (format {data.get('format')!r}, expected {FORMAT!r})")
        f64 = lambda k: np.asarray(data[k], dtype=np.float64)  # noqa: E731
        return cls(
            config=PreprocessConfig.from_dict(data["config"]),
            numeric_columns_=list(data["numeric_columns_"]),
            statistics_=f64("statistics_"),
            mean_=f64("mean_"),
            var_=f64("var_"),
            scale_=f64("scale_"),
            n_samples_seen_=int(data["n_samples_seen_"]),
            categories_={k: list(v) for k, v in data["categories_"].items()},
            struct_fields_=dict(data["struct_fields_"]),
            sources_=dict(data["sources_"]),
            target_=data["target_"],
            dropped_=dict(data["dropped_"]),
            columns_=[dict(r) for r in data["columns_"]],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> FittedPreprocessor:
        return cls.from_dict(json.loads(text))

    def save(self, path) -> None:
        """Write :meth:`to_json` to ``path`` (str or path-like)."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())

    @classmethod
    def load(cls, path) -> FittedPreprocessor:
        with open(path, encoding="utf-8") as fh:
            return cls.from_json(fh.read())


_SUMMARY_COLUMNS = [
    "column",
    "source",
    "kind",
    "status",
    "reason",
    "n_train",
    "null_share",
    "mean",
    "std",
    "median",
    "median_exact",
    "median_error_bound",
    "min",
    "max",
    "n_categories",
    "n_categories_kept",
    "n_outputs",
]


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.generic,)):
        return _jsonable(v.item())
    return v


# Complexity: one pass over the columns, keep/drop reasons in documented order, then arrays.
def fit_preprocessor(stats: PreprocessStats, config: PreprocessConfig | None = None) -> FittedPreprocessor:  # noqa: C901
    """Fit imputation, scaling and one-hot vocabularies from merged train statistics.

    ``config`` defaults to the statistics' own settings (fit fields at their defaults);
    its (stats) fields must equal those the statistics were computed with.

    Decisions (logged, and recorded in ``dropped_`` and :meth:`FittedPreprocessor.summary`):
    a column with no non-null train value is dropped (warning: nothing to impute
    with); a column with train null share > ``null_threshold`` is dropped; a
    categorical column past ``max_category_values_tracked`` distinct values is
    dropped as high-cardinality; categories beyond ``max_categories`` (least frequent)
    map to all zeros.
    """
    if config is None:
        config = PreprocessConfig.from_dict(stats.config)
    elif config.stats_dict() != stats.config:
        diff = sorted(k for k, v in config.stats_dict().items() if stats.config.get(k) != v)
        raise ConfigMismatchError(
            f"config differs from the one the statistics were computed with in {diff}; recompute the statistics"
        )

    records: list[dict[str, Any]] = []
    dropped: dict[str, str] = {}
    numeric: list[tuple[str, float, float, float, int, int]] = []  # name, median, mean, m2, count, n_rows
    categories: dict[str, list[str]] = {}
    sources = {c: s.source for c, s in stats.columns.items() if s.source}
    for col in sorted(stats.columns):
        st = stats.columns[col]
        null_share = st.null_count / st.n_rows if st.n_rows else 1.0
        rec: dict[str, Any] = {k: None for k in _SUMMARY_COLUMNS}
        rec.update(column=col, source=st.source, kind=st.kind, n_train=st.n_rows, null_share=null_share, n_outputs=0)
        reason = None
        if st.count == 0:
            reason = "all null in train: no value to impute with"
            logger.warning("preprocess: column %r is entirely null in the %d train rows; dropped", col, st.n_rows)
        elif null_share > config.null_threshold:
            reason = f"null share {null_share:.4g} > null_threshold {config.null_threshold:g}"
        elif st.kind == "categorical" and st.overflow:
            reason = f"high cardinality: more than {config.max_category_values_tracked} distinct train values"
        if st.kind != "categorical" and st.count:
            sketch = st.numeric_sketch()
            rec.update(
                mean=st.mean,
                std=math.sqrt(st.m2 / st.count),
                min=st.min,
                max=st.max,
                median=sketch.median(),
                median_exact=sketch.exact,
                median_error_bound=sketch.error_bound(),
            )
        if st.kind == "categorical" and not st.overflow:
            rec["n_categories"] = len(st.category_counts())
        if reason is not None:
            if st.count:
                logger.info("preprocess: column %r dropped: %s", col, reason)
            rec.update(status="dropped", reason=reason)
            dropped[col] = reason
            records.append(rec)
            continue
        rec["status"] = "kept"
        if st.kind == "categorical":
            counts = st.category_counts()
            ordered = sort_categories(counts, st.numeric_categories)
            kept = ordered
            if config.max_categories is not None and len(ordered) > config.max_categories:
                rank = sorted(range(len(ordered)), key=lambda i: (-counts[ordered[i]], i))
                keep_idx = sorted(rank[: config.max_categories])
                kept = [ordered[i] for i in keep_idx]
                cut = sum(counts[c] for c in ordered) - sum(counts[c] for c in kept)
                rec["reason"] = (
                    f"{len(ordered) - len(kept)} rarest categories (share {cut / st.count:.4g} of non-null train rows) "
                    f"beyond max_categories={config.max_categories} map to all zeros"
                )
                logger.info("preprocess: column %r: %s", col, rec["reason"])
            categories[col] = kept
            rec.update(n_categories_kept=len(kept), n_outputs=len(kept))
        else:
            numeric.append((col, rec["median"], st.mean, st.m2, st.count, st.n_rows))
            rec["n_outputs"] = 1
        records.append(rec)

    cols = [c for c, *_ in numeric]
    med = np.array([m for _, m, *_ in numeric], dtype=np.float64)
    mean = np.array([x[2] for x in numeric], dtype=np.float64)
    m2 = np.array([x[3] for x in numeric], dtype=np.float64)
    cnt = np.array([x[4] for x in numeric], dtype=np.float64)
    n_rows = np.array([x[5] for x in numeric], dtype=np.float64)
    nulls = n_rows - cnt
    # statistics of the imputed column: the nulls become `nulls` copies of the median
    imp_mean = mean + (med - mean) * nulls / np.where(n_rows > 0, n_rows, 1)
    imp_m2 = m2 + (mean - med) ** 2 * cnt * nulls / np.where(n_rows > 0, n_rows, 1)
    var = imp_m2 / np.where(n_rows > 0, n_rows, 1)
    scale = np.sqrt(var)
    scale[_constant_mask(var, imp_mean, n_rows)] = 1.0

    names = cols + [f"{c}_{k}" for c, ks in categories.items() for k in ks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PreprocessError(
            f"output column names collide: {dupes} (a numeric column has the name of a one-hot column)"
        )
    for col, role in sorted(stats.ignored.items()):
        rec = {k: None for k in _SUMMARY_COLUMNS}
        why = {
            "dropped": "drop_columns",
            "datetime": "datetime: not a feature here (cyclical features come upstream)",
            "other": "unsupported type",
        }.get(role, role)
        rec.update(column=col, kind=role, status="dropped" if role == "dropped" else "ignored", reason=why, n_outputs=0)
        records.append(rec)
    if stats.target is not None:
        rec = {k: None for k in _SUMMARY_COLUMNS}
        rec.update(
            column=stats.target,
            kind="target",
            status="target",
            reason="kept aside: passed through, not a feature",
            n_outputs=0,
        )
        records.append(rec)

    return FittedPreprocessor(
        config=config,
        numeric_columns_=cols,
        statistics_=med,
        mean_=imp_mean,
        var_=var,
        scale_=scale,
        n_samples_seen_=int(n_rows.max()) if len(n_rows) else int(stats.n_train_rows),
        categories_=categories,
        struct_fields_=dict(stats.struct_fields),
        sources_=sources,
        target_=stats.target,
        dropped_=dropped,
        columns_=records,
    )


def frame_value(frame: pd.DataFrame, column: str, position: int):
    """The value at row ``position`` of ``frame[column]`` (for messages), or None when the column is absent."""
    return frame[column].iloc[position] if column in frame.columns else None
