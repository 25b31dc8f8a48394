"""PCA from mergeable sufficient statistics: exact, order-independent, cheap to re-merge.

    stats = PCAStats()
    for batch in batches:                 # NumPy or backend arrays, (n_i, d)
        stats.update(batch)
    # or: per-partition stats, then functools.reduce(PCAStats.merge, parts)
    model = stats.fit(n_components=32)    # PCAModel, scikit-learn attribute names
    projected = model.transform(batch)    # same kind of array (and dtype) as batch

    # windows of one series of (n, F) rows, several strides (rows[0] is series row first_row):
    parts = PCAStats.from_stride_windows(rows, window_size=5, strides=(1, 3, 5), first_row=first_row)
    models = {s: merged[s].fit(32) for s in (1, 3, 5)}          # after merging parts over partitions
    projected = project_stride_windows(rows, 5, models, first_row=first_row)   # {stride: (m_s, 32)}

Statistics are (count, mean, scatter about the mean), held as NumPy float64. Each batch's
mean and centred scatter ``(X - mean).T @ (X - mean)`` are computed on the batch's own backend
(float32 data is read as float32 and centred block by block into float64, so its products and
sums are float64: the statistics are those of the float32 values, with no float32 rounding added;
float64 data stays float64), then only the small (d,) and (d, d) results come to NumPy float64
and are merged with Chan, Golub & LeVeque's pairwise update:

    n = na + nb,  delta = mean_b - mean_a,
    mean = mean_a + delta * nb / n,  scatter = Sa + Sb + outer(delta, delta) * na * nb / n.

Component sign rule (deterministic, and the one scikit-learn's PCA uses since 1.5 via
``svd_flip(u_based_decision=False)``): the loading with the largest absolute value in each
component is positive (the first such loading on ties).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..names import FLOAT_DTYPES
from ..ops import backend_of
from ..windowing import TRAIN, ChunkWindows, gather_windows, series_starts
from .windows import check_setting

_FLOAT_DTYPES = FLOAT_DTYPES


def _as_batch(X):
    """(backend, backend array in float32 or float64, 2-D) for an (n, d) input of any array kind."""
    backend = backend_of(X)
    x = backend.asarray(X)
    if len(x.shape) != 2:
        raise ValueError(f"expected an (n_samples, n_features) array, got shape {tuple(x.shape)}")
    if backend.dtype_name(x) not in _FLOAT_DTYPES:
        x = backend.astype(x, "float32" if backend.dtype_name(x) in ("float16", "bfloat16") else "float64")
    return backend, x


def _check_finite(backend, x, where: str) -> None:
    if backend.all_finite(x):
        return
    values = backend.to_numpy(x)
    bad = ~np.isfinite(values)
    columns = np.flatnonzero(bad.any(axis=0))
    n_nan = int(np.isnan(values).sum())
    n_inf = int(bad.sum()) - n_nan
    shown = ", ".join(str(c) for c in columns[:10]) + (", ..." if len(columns) > 10 else "")
    raise ValueError(
        f"{where}: input has {n_nan} NaN and {n_inf} infinite value(s) in feature column index(es) "
        f"[{shown}] (first: column {columns[0]}); impute or drop them before PCA"
    )


def _check_n_components(n_components, limit: int, n_samples: int, n_features: int) -> int:
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
        raise TypeError(f"n_components must be an integer, got {n_components!r}")
    if not 1 <= n_components <= limit:
        raise ValueError(
            f"n_components={n_components} must be between 1 and min(n_samples, n_features) = "
            f"min({n_samples}, {n_features}) = {limit}"
        )
    return int(n_components)


def _require(arrays: Mapping[str, np.ndarray], keys, kind: str) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise KeyError(f"{kind}.from_arrays: missing array(s) {missing}; got {sorted(arrays)}")


def rank_tolerance(dtype: str, n_features: int) -> float:
    """Relative size below which an eigenvalue (or explained-variance ratio, relative to the largest) is
    rounding for data of ``dtype``: ``eps(dtype) * max(n_features, 1)`` (the usual numerical-rank rule)."""
    if str(dtype) not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
    return float(np.finfo(np.dtype(str(dtype))).eps) * max(int(n_features), 1)


def numerical_rank(eigenvalues, n_features: int, dtype: str = "float32") -> int:
    """Number of ``eigenvalues`` (any order; or quantities proportional to them, such as explained-variance
    ratios) above ``rank_tolerance(dtype, n_features) * max``. Non-finite values are not counted."""
    values = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0 or values.max() <= 0:
        return 0
    return int(np.count_nonzero(values > rank_tolerance(dtype, n_features) * values.max()))


# helpers shared by PCAStats and project_stride_windows
_BLOCK_BYTES = 5 * 2**19  # 2.5 MiB: a centred block of this size is made and multiplied while it is in cache


_FLUSH_BYTES = 32 * 2**20  # block products held on the backend before they are summed on the host


def _block_rows(d: int, dtype: str) -> int:
    """Rows per block: ``_BLOCK_BYTES`` of rows, but at least 4 d (so a (d, d) product per block stays cheap)."""
    return max(256, 4 * d, _BLOCK_BYTES // (d * (8 if dtype == "float64" else 4)))


def _ones(backend, n: int, dtype: str):
    return backend.add(backend.zeros((1, n), dtype), 1)


def _to64(backend, x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


class _Sum64:
    """Running float64 sum (on the host) of same-shape backend arrays, taken over in batches:
    up to ``_FLUSH_BYTES`` of pending arrays are stacked and brought over in one transfer."""

    def __init__(self, backend):
        self.backend, self.pending, self.total, self.nbytes = backend, [], None, 0

    def add(self, x) -> None:
        self.pending.append(x)
        self.nbytes += int(np.prod(x.shape)) * 8
        if self.nbytes >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            stacked = self.pending[0][None] if len(self.pending) == 1 else self.backend.stack(self.pending)
            part = _to64(self.backend, stacked).sum(axis=0)
            self.total = part if self.total is None else self.total + part
            self.pending, self.nbytes = [], 0

    def value(self) -> np.ndarray:
        self._flush()
        return self.total


def _shift(backend, x, ones, where: str):
    """(column sums of x in float64, the column means in x's dtype as a backend array, those means in float64).

    One (1, n) @ (n, d) product. A NaN or infinity anywhere makes its column's sum non-finite; only
    then is ``x`` scanned, to raise the error naming the values and columns."""
    total = _to64(backend, backend.matmul(ones[:, : x.shape[0]], x)).reshape(-1)
    if not np.isfinite(total).all():
        _check_finite(backend, x, where)
        raise ValueError(f"{where}: the column sums overflow {backend.dtype_name(x)}; scale the data or pass float64")
    shift = backend.asarray(total / x.shape[0], backend.dtype_name(x))
    return total, shift, _to64(backend, shift)


def _check_result(backend, x, scatter: np.ndarray, where: str) -> None:
    """The (float64) scatter must be finite and, for float32 input, within float32's range (what float32 work on
    such data, e.g. its projections, can hold), else an error naming any non-finite values."""
    if not np.isfinite(scatter).all() or np.abs(scatter).max(initial=0.0) > np.finfo(backend.dtype_name(x)).max:
        _check_finite(backend, x, where)
        raise ValueError(
            f"{where}: the scatter matrix overflows {backend.dtype_name(x)}; scale the data or pass float64"
        )


def _series_plan(rows, window_size, strides, first_row):
    """(backend, rows, w, sorted strides, {s: window starts}) for one series whose ``rows[0]`` is row ``first_row``
    (the rule of ``emberharmony_core.windowing``: stride-s windows start at the series rows 0, s, 2s, ...)."""
    backend, r = _as_batch(rows)
    w = check_setting("window_size", window_size)
    if isinstance(strides, (int, np.integer)) and not isinstance(strides, bool):
        strides = [strides]
    strides = sorted({check_setting("stride", s) for s in strides})
    if not strides:
        raise ValueError("strides must name at least one stride")
    if isinstance(first_row, bool) or not isinstance(first_row, (int, np.integer)) or first_row < 0:
        raise ValueError(f"first_row must be an integer >= 0, got {first_row!r}")
    starts = {s: series_starts(int(r.shape[0]), w, s, int(first_row)) for s in strides}
    return backend, r, w, strides, starts


def _check_window_rows(backend, r, starts: dict, w: int, where: str) -> None:
    """Every row from the first window's first row to the last window's last row is finite (rows that a
    stride larger than the window skips included), else an error naming the values and row columns."""
    used = [st for st in starts.values() if len(st)]
    if used:
        lo, hi = min(int(st[0]) for st in used), max(int(st[-1]) for st in used) + w
        _check_finite(backend, r[lo:hi], where)


class PCAStats:
    """Mergeable PCA statistics: ``n_samples``, ``mean`` (d,) and ``scatter`` (d, d), NumPy float64.

    ``scatter`` is the sum of outer products about the mean, so ``scatter / (n - 1)`` is the
    sample covariance. An empty instance (``n_samples == 0``) is the identity of ``merge``.
    """

    def __init__(self, n_features: int | None = None):
        self.n_samples = 0
        self.n_features = None if n_features is None else int(n_features)
        d = self.n_features or 0
        self.mean = np.zeros(d, dtype=np.float64)
        self.scatter = np.zeros((d, d), dtype=np.float64)

    def __repr__(self) -> str:
        return f"PCAStats(n_samples={self.n_samples}, n_features={self.n_features})"

    # building
    def _check_features(self, d: int, where: str) -> None:
        if self.n_features is not None and d != self.n_features:
            raise ValueError(
                f"{where}: feature count mismatch: these statistics have {self.n_features} features, got {d}"
            )

    def _absorb(self, n: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        """Chan et al. pairwise merge of (n, mean, scatter) into self, in place."""
        if n == 0:
            return
        if self.n_samples == 0:
            self.n_samples, self.n_features = int(n), int(mean.shape[0])
            self.mean, self.scatter = mean.copy(), scatter.copy()
            return
        na, nb = self.n_samples, int(n)
        total = na + nb
        delta = mean - self.mean
        self.mean = self.mean + delta * (nb / total)
        self.scatter = self.scatter + scatter + np.outer(delta, delta) * (na * nb / total)
        self.n_samples = total

    def update(self, X) -> PCAStats:
        """Add an (n, d) batch (NumPy or any backend array). Returns self. An empty batch is a no-op.

        Computed on the batch's backend; integer input is promoted to float64. The column sums come
        from one matrix-vector product in the input dtype (non-finite input shows there, so the batch
        is scanned only to name the bad values); the scatter about those means is accumulated over
        blocks of a few MiB, so each centred block is made and multiplied in cache and no centred
        (n, d) copy is kept. float32 blocks are centred into float64, and their products and column
        sums are float64: a float32 product summed over thousands of rows rounds away the variance of
        the small components (float64 products take about twice the time). float64 stays float64.
        A float32 batch's scatter must fit float32's range.
        """
        backend, x = _as_batch(X)
        n, d = int(x.shape[0]), int(x.shape[1])
        self._check_features(d, "PCAStats.update")
        if n == 0:
            return self
        dtype = backend.dtype_name(x)
        total, shift, shift64 = _shift(backend, x, _ones(backend, n, dtype), "PCAStats.update")
        widen = dtype != "float64"  # float32: centre on a float64 shift, products and sums in float64
        block = _block_rows(d, "float64")
        if widen:
            shift, ones = backend.asarray(shift64, "float64"), _ones(backend, block, "float64")
        gram, sums = _Sum64(backend), _Sum64(backend)  # sums: float32 only, the centred blocks' column sums
        for b0 in range(0, n, block):
            centred = backend.subtract(x[b0 : b0 + block], shift)  # a float64 shift promotes float32 rows to float64
            gram.add(backend.matmul(backend.transpose(centred), centred))
            if widen:
                sums.add(backend.matmul(ones[:, : int(centred.shape[0])], centred))
        # float32: the mean from the float64 sums of the centred rows (the float32 column sums that gave the
        # shift are off by float32 rounding, which the merge of batch means would carry into the scatter)
        mean = shift64 + sums.value().reshape(-1) / n if widen else total / n
        delta = mean - shift64  # the applied shift is the mean rounded to the input dtype
        scatter = gram.value() - n * np.outer(delta, delta)
        _check_result(backend, x, scatter, "PCAStats.update")
        self._absorb(n, mean, (scatter + scatter.T) * 0.5)
        return self

    @classmethod
    def from_stride_windows(
        cls, rows, window_size: int, strides, *, first_row: int = 0, block_windows: int | None = None
    ) -> dict[int, PCAStats]:
        """Statistics of the stride windows of one series for several strides: ``{stride: PCAStats}``.

        With ``first_row=0`` each entry equals ``PCAStats().update(stride_windows(rows, window_size, s))``
        (to the input dtype's rounding). ``first_row`` is the series row number of ``rows[0]`` (when ``rows``
        continue a series after its first ``first_row`` rows, starting with the last ``window_size - 1``
        rows before them): stride-``s`` windows then start at the series rows 0, s, 2s, ..., so merging the
        parts gives the whole series' statistics whatever the cut (the rule of ``emberharmony_core.windowing``).

        rows: (n, F) NumPy or backend array. strides: an int or ints >= 1. Returns (w * F)-feature statistics
        per stride (empty ones where a stride has no window). The windows are gathered ``block_windows`` at a
        time (default: a few MiB) and each block goes through ``update`` (products and sums in float64).
        Rows between the first and last window must be finite.
        """
        backend, r, w, strides, starts = _series_plan(rows, window_size, strides, first_row)
        _check_window_rows(backend, r, starts, w, "PCAStats.from_stride_windows")
        return stats_by_stride(backend, r, w, starts, block_windows)

    def update_windows(self, rows, window_size: int, stride: int) -> PCAStats:
        """Add the windows of ``rows`` without keeping them: the same statistics as
        ``update(stride_windows(rows, window_size, stride))``, from the (n, F) rows (see
        ``from_stride_windows``, which does several strides from one pass). Returns self; fewer
        than ``window_size`` rows is a no-op.
        """
        part = PCAStats.from_stride_windows(rows, window_size, [stride])[int(stride)]
        assert part.n_features is not None  # from_stride_windows sizes each PCAStats
        self._check_features(int(part.n_features), "PCAStats.update_windows")
        self._absorb(part.n_samples, part.mean, part.scatter)
        return self

    def merge(self, other: PCAStats) -> PCAStats:
        """Combined statistics of ``self`` and ``other`` as a new object (neither is changed)."""
        if not isinstance(other, PCAStats):
            raise TypeError(f"PCAStats.merge expects PCAStats, got {type(other).__name__}")
        if self.n_features is not None and other.n_features is not None:
            self._check_features(other.n_features, "PCAStats.merge")
        out = PCAStats(self.n_features if self.n_features is not None else other.n_features)
        out._absorb(self.n_samples, self.mean, self.scatter)
        out._absorb(other.n_samples, other.mean, other.scatter)
        return out

    def __add__(self, other: PCAStats) -> PCAStats:
        return self.merge(other)

    @property
    def covariance(self) -> np.ndarray:
        """Sample covariance (d, d), ``scatter / (n - 1)``."""
        if self.n_samples < 2:
            raise ValueError(f"covariance needs at least 2 samples, these statistics hold {self.n_samples}")
        return self.scatter / (self.n_samples - 1)

    # fitting
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the scatter matrix (d,), descending, tiny negative ones (rounding) clipped to 0."""
        if not self.n_features:
            return np.zeros(0, dtype=np.float64)
        return np.clip(np.linalg.eigvalsh(self.scatter)[::-1], 0.0, None)

    def numerical_rank(self, dtype: str = "float32") -> int:
        """How many principal directions the statistics resolve for data of ``dtype``: the number of scatter
        eigenvalues above ``eps(dtype) * max eigenvalue * n_features`` (see ``numerical_rank``). float32 by
        default: float32 windows are the data rounded to float32, which moves the scatter by float32-relative
        amounts even though it is computed in float64. 0 for empty statistics or constant data."""
        return numerical_rank(self.eigenvalues(), self.n_features or 0, dtype)

    def fit(self, n_components: int, backend=None) -> PCAModel:
        """Principal components by float64 symmetric eigendecomposition of the scatter matrix (on ``backend``'s
        ``eigh`` when one is given, e.g. torch on a GPU for wide windows; NumPy otherwise).

        Eigenvalues that rounding makes slightly negative (rank-deficient data) are clipped to 0, so every
        ``explained_variance_`` is >= 0; the ratios are of the trace (the total variance), so with
        ``n_components`` above ``numerical_rank`` their sum can exceed 1 by the clipped rounding.
        """
        n, d = self.n_samples, self.n_features or 0
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples to fit, these statistics hold {n}")
        limit = min(n, d)
        k = _check_n_components(n_components, limit, n, d)
        if backend is None:
            eigenvalues, eigenvectors = np.linalg.eigh(self.scatter)
        else:
            eigenvalues, eigenvectors = (
                np.asarray(backend.to_numpy(a), dtype=np.float64) for a in backend.eigh(self.scatter)
            )
        order = np.argsort(eigenvalues)[::-1][:limit]  # descending; rank is at most min(n, d)
        scatter_eigenvalues = np.clip(eigenvalues[order], 0.0, None)
        vectors = eigenvectors[:, order].T  # (limit, d), rows are components
        explained_all = scatter_eigenvalues / (n - 1)
        total_variance = float(np.trace(self.scatter)) / (n - 1)
        components = vectors[:k]
        biggest = np.argmax(np.abs(components), axis=1)
        signs = np.sign(components[np.arange(k), biggest])
        signs[signs == 0] = 1.0
        components = components * signs[:, None]
        explained = explained_all[:k]
        return PCAModel(
            components=components,
            mean=self.mean.copy(),
            explained_variance=explained,
            explained_variance_ratio=explained / total_variance if total_variance > 0 else np.zeros(k),
            singular_values=np.sqrt(scatter_eigenvalues[:k]),
            noise_variance=float(explained_all[k:].mean()) if k < limit else 0.0,
            n_samples=n,
        )

    # serialisation (no pickle: np.savez / np.load(allow_pickle=False))
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "n_samples": np.asarray(self.n_samples, dtype=np.int64),
            "n_features": np.asarray(-1 if self.n_features is None else self.n_features, dtype=np.int64),
            "mean": self.mean.astype(np.float64, copy=True),
            # the scatter is symmetric: its upper triangle (row by row) is all there is to store
            "scatter_upper": self.scatter[np.triu_indices(self.scatter.shape[0])].astype(np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> PCAStats:
        _require(arrays, ("n_samples", "mean"), "PCAStats")
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        if "scatter_upper" in arrays:
            scatter = _symmetric_from_upper(np.asarray(arrays["scatter_upper"], dtype=np.float64), mean.shape[0])
        else:
            _require(arrays, ("scatter",), "PCAStats")
            scatter = np.asarray(arrays["scatter"], dtype=np.float64)
        n_features = int(arrays["n_features"]) if "n_features" in arrays else mean.shape[0]
        out = cls(None if n_features < 0 else n_features)
        d = out.n_features or 0
        if mean.shape != (d,) or scatter.shape != (d, d):
            raise ValueError(
                f"PCAStats.from_arrays: mean {mean.shape} / scatter {scatter.shape} do not match {d} features"
            )
        out.n_samples = int(arrays["n_samples"])
        out.mean, out.scatter = mean.copy(), scatter.copy()
        return out


def _symmetric_from_upper(upper: np.ndarray, d: int) -> np.ndarray:
    """(d, d) symmetric matrix from its upper triangle, row by row (``np.triu_indices(d)`` order)."""
    if upper.shape != (d * (d + 1) // 2,):
        raise ValueError(
            f"PCAStats.from_arrays: scatter_upper has {upper.shape} values, {d} features need {d * (d + 1) // 2}"
        )
    out = np.zeros((d, d))
    rows, cols = np.triu_indices(d)
    out[rows, cols] = upper
    out[cols, rows] = upper
    return out


class PCAModel:
    """A fitted PCA with scikit-learn's attribute names (NumPy arrays).

    components_ (k, d), mean_ (d,), explained_variance_ (k,) (divided by n - 1),
    explained_variance_ratio_ (k,) (of the total variance), singular_values_ (k,),
    noise_variance_ (float), n_components_, n_samples_, n_features_in_.
    """

    def __init__(
        self, components, mean, explained_variance, explained_variance_ratio, singular_values, noise_variance, n_samples
    ):
        self.components_ = np.asarray(components, dtype=np.float64)
        self.mean_ = np.asarray(mean, dtype=np.float64)
        self.explained_variance_ = np.asarray(explained_variance, dtype=np.float64)
        self.explained_variance_ratio_ = np.asarray(explained_variance_ratio, dtype=np.float64)
        self.singular_values_ = np.asarray(singular_values, dtype=np.float64)
        self.noise_variance_ = float(noise_variance)
        self.n_samples_ = int(n_samples)
        self.n_components_, self.n_features_in_ = (int(s) for s in self.components_.shape)
        self._cache: dict = {}

    def __repr__(self) -> str:
        return (
            f"PCAModel(n_components={self.n_components_}, n_features_in={self.n_features_in_}, "
            f"n_samples={self.n_samples_})"
        )

    def _on(self, backend, dtype: str):
        """(mean_ @ components_.T, components_.T) on ``backend`` in ``dtype``, uploaded once and cached."""
        key = (backend.name, str(getattr(backend, "device", "")), dtype)
        if key not in self._cache:
            bias = self.mean_ @ self.components_.T
            self._cache[key] = (
                backend.asarray(bias, dtype),
                backend.asarray(np.ascontiguousarray(self.components_.T), dtype),
            )
        return self._cache[key]

    def _check_input(self, X, width: int, what: str):
        backend, x = _as_batch(X)
        if int(x.shape[1]) != width:
            raise ValueError(f"PCAModel.{what}: expected {width} features, got {int(x.shape[1])}")
        return backend, x

    def transform(self, X):
        """Project (n, d) ``X`` onto the components: ``(X - mean_) @ components_.T`` -> (n, k).

        NumPy in -> NumPy out; backend array in -> that backend's array out; float32 stays float32.
        Computed as ``X @ components_.T - mean_ @ components_.T`` (the bias in float64, then cast),
        so a strided window view is read once and no centred (n, d) copy is made.
        """
        backend, x = self._check_input(X, self.n_features_in_, "transform")
        bias, components_t = self._on(backend, backend.dtype_name(x))
        return backend.subtract(backend.matmul(x, components_t), bias)

    def transform_by_component(self, X):
        """``transform(X).T``: (k, n), row j the n projections on component j, contiguous (what a columnar
        writer takes without a transposing copy). Computed as ``components_ @ X.T - bias``: the products of
        ``transform``, equal to it up to float rounding (bit for bit with NumPy's BLAS here)."""
        backend, x = self._check_input(X, self.n_features_in_, "transform_by_component")
        bias, components_t = self._on(backend, backend.dtype_name(x))
        column = backend.reshape(bias, (int(components_t.shape[1]), 1))
        return backend.subtract(backend.matmul(backend.transpose(components_t), backend.transpose(x)), column)

    def inverse_transform(self, Z):
        """Back from (n, k) projections to (n, d): ``Z @ components_ + mean_`` (same array kind and dtype)."""
        backend, z = self._check_input(Z, self.n_components_, "inverse_transform")
        dtype = backend.dtype_name(z)
        _, components_t = self._on(backend, dtype)
        return backend.add(backend.matmul(z, backend.transpose(components_t)), backend.asarray(self.mean_, dtype))

    def to_sklearn(self):
        """This model as a fitted ``sklearn.decomposition.PCA(n_components=k, svd_solver="full")``.

        Its attributes are set as scikit-learn's own ``fit`` sets them (``components_``, ``mean_``,
        ``explained_variance_``, ``explained_variance_ratio_``, ``singular_values_``, ``noise_variance_``,
        ``n_components_``, ``n_samples_``, ``n_features_in_``; float64), so ``transform``,
        ``inverse_transform``, ``get_covariance``, ``get_precision`` and ``score`` work, and ``transform``
        equals ours (float64 output, as scikit-learn computes with float64 components). Needs scikit-learn.
        """
        from sklearn.decomposition import PCA  # scikit-learn only when converting (the core does not need it)

        pca = PCA(n_components=int(self.n_components_), svd_solver="full")
        pca.components_ = self.components_.copy()
        pca.mean_ = self.mean_.copy()
        pca.explained_variance_ = self.explained_variance_.copy()
        pca.explained_variance_ratio_ = self.explained_variance_ratio_.copy()
        pca.singular_values_ = self.singular_values_.copy()
        pca.noise_variance_ = float(self.noise_variance_)
        pca.n_components_ = int(self.n_components_)
        pca.n_samples_ = int(self.n_samples_)
        pca.n_features_in_ = int(self.n_features_in_)
        pca._fit_svd_solver = "full"  # what fit() records (its tags read it)
        return pca

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "components": self.components_.copy(),
            "mean": self.mean_.copy(),
            "explained_variance": self.explained_variance_.copy(),
            "explained_variance_ratio": self.explained_variance_ratio_.copy(),
            "singular_values": self.singular_values_.copy(),
            "noise_variance": np.asarray(self.noise_variance_, dtype=np.float64),
            "n_samples": np.asarray(self.n_samples_, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> PCAModel:
        keys = (
            "components",
            "mean",
            "explained_variance",
            "explained_variance_ratio",
            "singular_values",
            "noise_variance",
            "n_samples",
        )
        _require(arrays, keys, "PCAModel")
        model = cls(
            **{k: arrays[k] for k in keys[:-2]},
            noise_variance=float(arrays["noise_variance"]),
            n_samples=int(arrays["n_samples"]),
        )
        k, d = model.components_.shape
        if model.mean_.shape != (d,) or any(
            getattr(model, a).shape != (k,)
            for a in ("explained_variance_", "explained_variance_ratio_", "singular_values_")
        ):
            raise ValueError(f"PCAModel.from_arrays: array shapes do not match components {model.components_.shape}")
        return model


def _check_models(models) -> None:
    if not isinstance(models, Mapping) or not models:
        raise TypeError(
            f"project_stride_windows expects a non-empty {{stride: PCAModel}} mapping, got {type(models).__name__}"
        )


def iter_project_stride_windows(
    rows, window_size: int, models: Mapping[int, PCAModel], *, first_row: int = 0, block_windows: int | None = None
):
    """Stream the projections of ``project_stride_windows`` block by block: yields ``(stride, start, projected)``
    where ``projected`` (k, k_s) holds windows ``start .. start + k - 1`` of that stride (numbered as in
    ``stride_windows``), in order for each stride; blocks cover every window exactly once. Nothing the size of
    the whole result is held: write each block out as it comes.
    """
    _check_models(models)
    backend, r, w, strides, starts = _series_plan(rows, window_size, list(models), first_row)
    d = w * int(r.shape[1])
    for s in strides:
        if not isinstance(models[s], PCAModel):
            raise TypeError(f"project_stride_windows: models[{s}] is {type(models[s]).__name__}, not PCAModel")
        if models[s].n_features_in_ != d:
            raise ValueError(
                f"project_stride_windows: the model for stride {s} expects {models[s].n_features_in_} "
                f"features, windows of {w} x {int(r.shape[1])} have {d}"
            )
    for s in strides:
        done = 0
        for block in gather_windows(backend, r, starts[s], w, block_windows):
            yield s, done, models[s].transform(block)
            done += int(block.shape[0])


def project_stride_windows(
    rows, window_size: int, models: Mapping[int, PCAModel], *, first_row: int = 0, block_windows: int | None = None
) -> dict:
    """Project the stride windows of ``rows`` with each stride's model: ``{stride: (m_s, k_s) array}``.

    With ``first_row=0`` entry ``s`` equals ``models[s].transform(stride_windows(rows, window_size, s))``
    (to the input dtype's rounding); ``first_row`` places the windows on the series' stride phase as in
    ``PCAStats.from_stride_windows``. rows: (n, F) NumPy or backend array; the results are that backend's
    arrays in the rows' dtype. ``models``: ``{stride: PCAModel}`` fitted on w * F features.
    """
    _check_models(models)
    backend, r = _as_batch(rows)
    pieces: dict[int, list] = {int(s): [] for s in models}
    for s, _, projected in iter_project_stride_windows(
        r, window_size, models, first_row=first_row, block_windows=block_windows
    ):
        pieces[s].append(projected)
    dtype = backend.dtype_name(r)
    return {
        s: (
            backend.zeros((0, models[s].n_components_), dtype)
            if not parts
            else parts[0]
            if len(parts) == 1
            else backend.concat(parts, axis=0)
        )
        for s, parts in pieces.items()
    }


def stats_by_stride(backend, rows, window_size: int, starts: Mapping[int, np.ndarray], block_windows=None) -> dict:
    """``{s: PCAStats of the windows of rows starting at starts[s]}``. rows: (n, F) backend array; starts: sorted
    row numbers per stride; d = window_size * F.

    Each window is gathered once (windows grouped by the strides they start in) and multiplied only by the
    first min(s, w) block-rows of each stride's Gram; the others follow from those and each run's first and last
    window (``_shifted_blocks``; docs/pca.md, "How the statistics are computed"). Rows are centred into float64,
    and the products and sums are float64, as in ``PCAStats.update``.
    """
    w, f = int(window_size), int(rows.shape[1])
    width, strides = w * f, list(starts)
    out = {s: PCAStats(width) for s in strides}
    member = np.zeros(int(rows.shape[0]), np.int64)  # per row: bit i set when stride i's window starts there
    for i, s in enumerate(strides):
        member[starts[s]] |= 1 << i
    at = np.flatnonzero(member)
    if len(at) == 0:
        return out
    shift64 = _window_shift(backend, rows, at, w)
    groups = member[at]
    lo, hi = int(at[0]), int(at[-1]) + w  # the rows the windows cover, centred once (float64)
    centred = backend.subtract(rows[lo:hi], backend.asarray(shift64[:f], "float64"))
    at, starts = at - lo, {s: starts[s] - lo for s in strides}
    sums = {s: np.zeros(width) for s in strides}
    grams = {s: np.zeros((width, width)) for s in strides}
    for group in np.flatnonzero(np.bincount(groups)):  # the groups present, ascending
        mine = [s for i, s in enumerate(strides) if group >> i & 1]
        height = max(min(s, w) for s in mine) * f  # the block-rows this group's strides take from the windows
        total, product = _window_products(backend, centred, at[groups == group], w, height, block_windows)
        for s in mine:
            sums[s] += total
            grams[s][: min(s, w) * f] += product[: min(s, w) * f]
    for s in strides:
        count = len(starts[s])
        if count == 0:
            continue
        if s < w:
            _shifted_blocks(backend, centred, starts[s], s, w, grams[s])
        delta = sums[s] / count
        scatter = grams[s] - count * np.outer(delta, delta)
        _check_result(backend, rows, scatter, "PCAStats of stride windows")
        out[s]._absorb(count, shift64 + delta, (scatter + scatter.T) * 0.5)
    return out


def _window_shift(backend, rows, starts: np.ndarray, w: int) -> np.ndarray:
    """(w * F,) float64: the column means of the windows' first rows (rounded to the rows' dtype), tiled w times."""
    first = backend.take(rows, backend.asarray(starts), axis=0)
    _, _, shift64 = _shift(backend, first, _ones(backend, len(starts), backend.dtype_name(rows)), "PCAStats")
    return np.tile(shift64, w)


def _window_products(backend, centred, starts, w, height, block_windows):
    """(column sums (d,), first ``height`` rows of the Gram (height, d)) of the windows of the float64 ``centred``
    rows at ``starts``, block by block."""
    sums, gram = _Sum64(backend), _Sum64(backend)
    for block in gather_windows(backend, centred, starts, w, block_windows):
        gram.add(backend.matmul(backend.transpose(block[:, :height]), block))
        sums.add(backend.matmul(_ones(backend, int(block.shape[0]), "float64"), block))
    return sums.value().reshape(-1), gram.value()


def _shifted_blocks(backend, centred, starts, s, w, gram) -> None:
    """Fill block-rows s .. w - 1 of ``gram`` (d, d) from its first s block-rows: over a run of windows s apart,
    block (i, j) = block (i - s, j - s) - (the run's first window, positions i - s and j - s) + (its last
    window, positions i and j); blocks (i, j < s) are the transposes of block-rows j."""
    f = int(centred.shape[1])
    breaks = np.flatnonzero(np.diff(starts) != s) + 1
    firsts, lasts = starts[np.r_[0, breaks]], starts[np.r_[breaks - 1, len(starts) - 1]]
    _, heads = _window_products(backend, centred, firsts, w, w * f, None)
    _, tails = _window_products(backend, centred, lasts, w, w * f, None)
    lead, rest = s * f, (w - s) * f
    for i in range(s, w):
        row, back = slice(i * f, (i + 1) * f), slice((i - s) * f, (i - s + 1) * f)
        gram[row, :lead] = gram[:lead, row].T
        gram[row, lead:] = gram[back, :rest] - heads[back, :rest] + tails[row, lead:]


def window_stats_by_stride(made: ChunkWindows, strides: Sequence[int], split: int | None = TRAIN) -> dict:
    """``{s: window_stats(made, s, split)}`` for every stride, each window gathered and multiplied once
    (``stats_by_stride``)."""
    strides = list(dict.fromkeys(int(s) for s in strides))
    starts = {s: made.starts[s] if split is None else made.starts[s][made.split[s] == split] for s in strides}
    return stats_by_stride(made.backend, made.rows, made.window_size, starts)


def window_stats(made: ChunkWindows, stride: int, split: int | None = TRAIN):
    """``PCAStats`` of the stride's windows in ``made`` (only those of ``split``; None: all), d = w * F."""
    return window_stats_by_stride(made, [stride], split)[int(stride)]


__all__ = [
    "window_stats",
    "window_stats_by_stride",
    "stats_by_stride",
    "PCAStats",
    "PCAModel",
    "project_stride_windows",
    "iter_project_stride_windows",
    "numerical_rank",
    "rank_tolerance",
]
