"""scikit-learn interop: a streaming PCA estimator over ``PCAStats``, and the fitted preprocessor as a Pipeline.

    from emberharmony_core.features import StreamingPCA
    pca = StreamingPCA(n_components=8)
    for batch in batches:                  # (n_i, d) arrays, any order
        pca.partial_fit(batch)
    Z = pca.transform(X)                   # (n, 8); equals PCA(8, svd_solver="full").fit(all rows).transform(X)

    sk_pca = model.to_sklearn()            # PCAModel -> fitted sklearn.decomposition.PCA
    pipe = fitted.to_sklearn_pipeline()    # FittedPreprocessor -> fitted sklearn Pipeline
    pipe.transform(frame)                  # == fitted.transform(frame)[0]

scikit-learn is imported at module level here only (and only when this module is imported): the rest of the core
imports it inside the methods that convert to it (``PCAModel.to_sklearn``, ``FittedPreprocessor.to_sklearn``).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6 (pyproject allows >= 1.4; tested with 1.9)

    def validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


from ..names import FLOAT_DTYPES
from ..ops import get_backend
from .pca import PCAModel, PCAStats
from .preprocess.config import category_keys
from .preprocess.stats import numeric_values
from .preprocess.structs import flatten_struct_columns

_DTYPES = FLOAT_DTYPES


class StreamingPCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA from mergeable statistics (:class:`PCAStats`) with scikit-learn's estimator API.

    ``fit(X)`` is exact full PCA (the components of the float64 scatter matrix): the same
    ``components_``, ``explained_variance_`` etc. as ``sklearn.decomposition.PCA(svd_solver="full")``
    to rounding, with the same component signs (the largest-magnitude loading of each component is
    positive, scikit-learn's rule since 1.5). ``partial_fit(batch)`` adds a batch to the statistics and
    refits, so after any sequence of batches, in any order, the model is the full PCA of every row seen
    (unlike ``IncrementalPCA``, which is approximate and order-dependent). Memory: O(d^2) whatever the rows.

    Parameters
    ----------
    n_components : int, float in (0, 1) or None, default None
        int: the number of components. float: the smallest number of components whose cumulative
        explained-variance ratio exceeds it (as scikit-learn's PCA). None: ``min(n_samples, n_features)``.
    dtype : {"float32", "float64"} or None, default None
        Precision of the batch products and of ``transform``. None keeps the input's float dtype
        (float32 data takes the fast path, anything else is float64). The statistics are float64 either way.
    backend : str or None, default None
        ``emberharmony_core.ops`` backend name ("numpy", "torch", "mlx", "auto") for the batch products and
        projections (e.g. "torch" on a GPU). None: NumPy. Inputs and outputs are NumPy arrays either way.

    Attributes
    ----------
    components_ : ndarray (n_components_, n_features_in_), float64
    mean_ : ndarray (n_features_in_,)
    explained_variance_, explained_variance_ratio_, singular_values_ : ndarray (n_components_,)
    noise_variance_ : float
    n_components_, n_samples_, n_features_in_ : int
    feature_names_in_ : ndarray of str (when fitted on a DataFrame with string column names)
    stats_ : PCAStats, the sufficient statistics of every row seen (mergeable, serialisable)
    model_ : PCAModel, the fitted model (``model_.to_arrays()`` is what the Dagster graph stores)

    Not supported (as scikit-learn's PCA has them): ``whiten``, ``svd_solver``, ``n_components="mle"``,
    sparse input, NaN. ``partial_fit`` before the statistics hold enough rows for ``n_components`` (or fewer
    than 2 rows) only accumulates: the estimator counts as fitted once a model could be fitted.

    ``sklearn.utils.estimator_checks.check_estimator`` (scikit-learn 1.9, legacy checks included) passes in full
    for the default, ``dtype="float64"`` and float ``n_components``; with ``dtype="float32"`` all but
    ``check_methods_sample_order_invariance`` (float32 products move a projection by 1 ulp when rows are
    permuted; the check's rtol is 1e-7). ``check_array_api_input`` is skipped (no array-API support claimed).
    See ``tests/core/test_sklearn_interop.py``.
    """

    def __init__(self, n_components=None, *, dtype=None, backend=None):
        self.n_components = n_components
        self.dtype = dtype
        self.backend = backend

    # ------------------------------------------------------------------ settings
    def _check_settings(self) -> None:
        k = self.n_components
        if k is not None:
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Real):
                raise TypeError(f"n_components must be an int, a float in (0, 1) or None, got {k!r}")
            if isinstance(k, numbers.Integral):
                if k < 1:
                    raise ValueError(f"n_components={k} must be >= 1")
            elif not 0.0 < float(k) < 1.0:
                raise ValueError(f"n_components={k!r}: a float n_components must lie in (0, 1)")
        if self.dtype is not None and str(self.dtype) not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES} or None, got {self.dtype!r}")
        if self.backend is not None and not isinstance(self.backend, str):
            raise TypeError(f"backend must be a backend name or None, got {self.backend!r}")

    def _input_dtype(self):
        return [np.float64, np.float32] if self.dtype is None else np.dtype(str(self.dtype))

    def _compute_backend(self):
        return None if self.backend is None else get_backend(self.backend)

    # ------------------------------------------------------------------ fitting
    def _absorb(self, X: np.ndarray) -> None:
        backend = self._compute_backend()
        self.stats_.update(X if backend is None or backend.name == "numpy" else backend.asarray(X))

    def _n_components_for(self, stats: PCAStats) -> int | None:
        """Components to fit from ``stats``, or None while they cannot be fitted yet."""
        n, d = stats.n_samples, stats.n_features or 0
        limit = min(n, d)
        k = self.n_components
        if n < 2 or limit < 1:
            return None
        if k is None:
            return limit
        if isinstance(k, numbers.Integral):
            count = int(k)
            if count > d:
                raise ValueError(f"n_components={k} must be <= n_features={d}")
            return count if count <= limit else None
        eigenvalues = stats.eigenvalues()[:limit]
        total = float(eigenvalues.sum())
        if total <= 0:
            return 1
        cumulative = np.cumsum(eigenvalues / total)
        return min(int(np.searchsorted(cumulative, float(k), side="right")) + 1, limit)

    def _refit(self, required: bool) -> None:
        k = self._n_components_for(self.stats_)
        if k is None:
            if required:
                raise ValueError(
                    f"n_components={self.n_components} must be between 1 and min(n_samples, n_features) = "
                    f"min({self.stats_.n_samples}, {self.stats_.n_features})"
                )
            return
        model = self.stats_.fit(k)
        self.model_ = model
        for name in (
            "components_",
            "mean_",
            "explained_variance_",
            "explained_variance_ratio_",
            "singular_values_",
            "noise_variance_",
            "n_components_",
            "n_samples_",
        ):
            setattr(self, name, getattr(model, name))

    def fit(self, X, y=None):
        """Full PCA of ``X`` (n_samples >= 2, n_features): resets the statistics. ``y`` is ignored. Returns self."""
        self._check_settings()
        X = validate_data(self, X, dtype=self._input_dtype(), ensure_min_samples=2, reset=True)
        for name in ("model_", "components_"):
            self.__dict__.pop(name, None)
        self.stats_ = PCAStats(X.shape[1])
        self._absorb(X)
        self._refit(required=True)
        return self

    def partial_fit(self, X, y=None):
        """Add the (n, n_features) batch ``X`` to the statistics and refit (the first call sets the features).
        Any batch order gives the same model. ``y`` is ignored. Returns self."""
        first = not hasattr(self, "stats_")
        if first:
            self._check_settings()
        X = validate_data(self, X, dtype=self._input_dtype(), reset=first)
        if first:
            self.stats_ = PCAStats(X.shape[1])
        self._absorb(X)
        self._refit(required=False)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    # ------------------------------------------------------------------ applying
    def transform(self, X):
        """(n, n_features_in_) -> (n, n_components_): ``(X - mean_) @ components_.T``, in ``dtype`` (None: X's float
        dtype, float32 stays float32)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=self._input_dtype(), reset=False)
        backend = self._compute_backend()
        if backend is None or backend.name == "numpy":
            return self.model_.transform(X)
        return np.asarray(backend.to_numpy(self.model_.transform(backend.asarray(X))))

    def inverse_transform(self, X):
        """(n, n_components_) -> (n, n_features_in_): ``X @ components_ + mean_``."""
        check_is_fitted(self)
        X = check_array(X, dtype=self._input_dtype(), input_name="X")
        if X.shape[1] != self.n_components_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__}.inverse_transform expects "
                f"{self.n_components_} (n_components_)"
            )
        return self.model_.inverse_transform(X)

    @property
    def _n_features_out(self) -> int:
        return self.n_components_

    def to_sklearn(self):
        """The fitted model as a ``sklearn.decomposition.PCA`` (see :meth:`PCAModel.to_sklearn`)."""
        check_is_fitted(self)
        pca = self.model_.to_sklearn()
        if hasattr(self, "feature_names_in_"):
            pca.feature_names_in_ = self.feature_names_in_.copy()
        return pca

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"] if self.dtype is None else [str(self.dtype)]
        return tags


pca_model_to_sklearn = PCAModel.to_sklearn  # the conversion as a function of the model (it lives in PCAModel)


# ---------------------------------------------------------------------------------------------- preprocessor


def numeric_block(X):
    """float64 values of numeric / boolean columns, NaN for nulls (the preprocessor's own conversion).
    A DataFrame stays a DataFrame (same columns and index), so the steps after it see feature names."""
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
    out = np.empty((len(frame), frame.shape[1]), dtype=np.float64)
    for j in range(frame.shape[1]):
        out[:, j] = numeric_values(frame.iloc[:, j])
    return pd.DataFrame(out, columns=frame.columns, index=frame.index) if isinstance(X, pd.DataFrame) else out


def category_key_block(X):
    """The preprocessor's canonical category keys (``str(value)``, integral floats as ints; object dtype), None
    for nulls: what its vocabulary holds, so a ``OneHotEncoder`` over them matches ours. A DataFrame stays one."""
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
    out = np.empty((len(frame), frame.shape[1]), dtype=object)
    for j in range(frame.shape[1]):
        codes, keys, _ = category_keys(frame.iloc[:, j])
        lut = np.array(list(keys) + [None], dtype=object)
        out[:, j] = lut[codes]  # code -1 (null) picks the trailing None
    return pd.DataFrame(out, columns=frame.columns, index=frame.index) if isinstance(X, pd.DataFrame) else out


def cast_block(X, dtype: str = "float32"):
    """``X`` in ``dtype`` (a DataFrame stays one)."""
    if isinstance(X, pd.DataFrame):
        return X.astype(np.dtype(dtype))
    return np.asarray(X, dtype=np.dtype(dtype))


class StructFlattener(TransformerMixin, BaseEstimator):
    """DataFrame -> DataFrame of the preprocessor's flat feature columns, in ``columns`` order.

    STRUCT columns named in ``struct_fields`` (dict-valued or Arrow STRUCT) are flattened to
    ``{col}_{field}`` (``FittedPreprocessor.flatten``); a flat column that the frame lacks (a STRUCT field
    absent from this partition) comes out all null, which the imputer fills, as ours does.
    Other columns of the frame are dropped.
    """

    def __init__(self, struct_fields=None, columns=None):
        self.struct_fields = struct_fields
        self.columns = columns

    def fit(self, X=None, y=None):
        self.columns_ = list(self.columns or [])
        self.struct_columns_ = list(self.struct_fields or {})
        return self

    def transform(self, X):
        check_is_fitted(self)
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"{type(self).__name__} needs a pandas DataFrame with the source columns, got {type(X).__name__}"
            )
        flat = flatten_struct_columns(X, [c for c in self.struct_columns_ if c in X.columns])[0]
        missing = [c for c in self.columns_ if c not in flat.columns]
        unknown = [c for c in missing if not any(c.startswith(f"{s}_") for s in self.struct_columns_)]
        if unknown:
            raise KeyError(f"feature column(s) {unknown} (seen at fit time) are not in the frame to transform")
        out = flat.reindex(columns=self.columns_)  # absent STRUCT fields: all NaN
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray(self.columns_, dtype=object)


def preprocessor_pipeline(fitted, output: str = "default") -> Any:
    """``FittedPreprocessor`` -> fitted ``Pipeline([("flatten", StructFlattener), ("encode", ColumnTransformer),
    ("cast", FunctionTransformer)])`` whose ``transform(frame)`` equals ``fitted.transform(frame)[0]``.

    * ``encode`` (flat input: ``pipeline[:-1]``'s first step's output, or ``fitted.flatten(frame)``):
      ``"numeric"``: ``Pipeline([to float64 (NULL -> NaN), SimpleImputer(strategy="median"), StandardScaler()])``
      on ``numeric_columns_`` with our medians, means, variances and scales;
      ``"categorical"``: ``Pipeline([canonical keys, OneHotEncoder(categories=<our kept vocabulary, our order>,
      handle_unknown="ignore")])``: NULLs, unseen categories and the categories ``max_categories`` cut give all
      zeros (the encoder's own ``max_categories`` is not used: it would add an "infrequent" column, we add none).
      ``verbose_feature_names_out=False``, so ``get_feature_names_out()`` is our ``feature_names_``.
    * ``cast``: to ``config.dtype`` (float32 by default), the dtype of our matrix.

    ``output``: ``"default"`` (NumPy arrays) or ``"pandas"`` (DataFrames named by ``feature_names_``, on the
    frame's index): the pipeline's ``set_output(transform=...)``, applied before its steps are fitted (switching a
    fitted pipeline's output later makes scikit-learn warn about feature names, as for any fitted pipeline).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric = list(fitted.numeric_columns_)
    categorical = {c: list(v) for c, v in fitted.categories_.items() if len(v)}
    transformers = []
    if numeric:
        transformers.append(
            (
                "numeric",
                Pipeline(
                    [
                        ("to_float", FunctionTransformer(numeric_block, feature_names_out="one-to-one")),
                        ("impute", SimpleImputer(strategy="median")),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            )
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("keys", FunctionTransformer(category_key_block, feature_names_out="one-to-one")),
                        (
                            "onehot",
                            OneHotEncoder(
                                categories=[np.array(v, dtype=object) for v in categorical.values()],
                                handle_unknown="ignore",
                                sparse_output=False,
                                dtype=np.float64,
                            ),
                        ),
                    ]
                ),
                list(categorical),
            )
        )
    if output not in ("default", "pandas"):
        raise ValueError(f"output must be 'default' or 'pandas', got {output!r}")
    encode = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False, sparse_threshold=0.0)
    encode.set_output(transform=output)

    # fitted on a two-row stand-in frame, then given our statistics (nothing of the stand-in survives)
    columns = numeric + list(categorical)
    dummy = pd.DataFrame(
        {**{c: np.zeros(2) for c in numeric}, **{c: [cats[0], cats[-1]] for c, cats in categorical.items()}},
        columns=columns,
    )
    encode.fit(dummy)
    if numeric:
        steps = encode.named_transformers_["numeric"].named_steps
        steps["impute"].statistics_ = np.asarray(fitted.statistics_, dtype=np.float64).copy()
        scaler = steps["scale"]
        scaler.mean_ = np.asarray(fitted.mean_, dtype=np.float64).copy()
        scaler.var_ = np.asarray(fitted.var_, dtype=np.float64).copy()
        scaler.scale_ = np.asarray(fitted.scale_, dtype=np.float64).copy()
        scaler.n_samples_seen_ = int(fitted.n_samples_seen_)

    flatten = StructFlattener(
        struct_fields={k: (list(v) if v is not None else None) for k, v in fitted.struct_fields_.items()},
        columns=columns,
    ).fit()
    cast = FunctionTransformer(cast_block, kw_args={"dtype": str(fitted.config.dtype)}, feature_names_out="one-to-one")
    cast.set_output(transform=output).fit(encode.transform(dummy))
    return Pipeline([("flatten", flatten), ("encode", encode), ("cast", cast)]).set_output(transform=output)


__all__ = [
    "StreamingPCA",
    "StructFlattener",
    "pca_model_to_sklearn",
    "preprocessor_pipeline",
    "numeric_block",
    "category_key_block",
    "cast_block",
]
