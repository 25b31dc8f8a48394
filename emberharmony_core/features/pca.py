"""PCA from mergeable sufficient statistics: exact, order-independent, cheap to re-merge.

    stats = PCAStats()
    for batch in batches:                 # NumPy or backend arrays, (n_i, d)
        stats.update(batch)
    # or: per-partition stats, then functools.reduce(PCAStats.merge, parts)
    model = stats.fit(n_components=32)    # PCAModel, scikit-learn attribute names
    projected = model.transform(batch)    # same kind of array (and dtype) as batch

Statistics are (count, mean, scatter about the mean), held as NumPy float64. Each batch's
mean and centred scatter ``(X - mean).T @ (X - mean)`` are computed on the batch's own backend
in the batch's dtype (float32 data takes the fast path: centred per batch, float32 product;
float64 data stays float64), then only the small (d,) and (d, d) results come to NumPy float64
and are merged with Chan, Golub & LeVeque's pairwise update:

    n = na + nb,  delta = mean_b - mean_a,
    mean = mean_a + delta * nb / n,  scatter = Sa + Sb + outer(delta, delta) * na * nb / n.

Component sign rule (deterministic, and the one scikit-learn's PCA uses since 1.5 via
``svd_flip(u_based_decision=False)``): the loading with the largest absolute value in each
component is positive (the first such loading on ties).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..ops import backend_of

_FLOAT_DTYPES = ("float32", "float64")


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
            raise ValueError(f"{where}: feature count mismatch: these statistics have {self.n_features} features, got {d}")

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

    def update(self, X) -> "PCAStats":
        """Add an (n, d) batch (NumPy or any backend array). Returns self. An empty batch is a no-op.

        Computed on the batch's backend in its dtype: float32 stays float32 (centred per batch),
        float64 stays float64; integer input is promoted to float64.
        """
        backend, x = _as_batch(X)
        n, d = int(x.shape[0]), int(x.shape[1])
        self._check_features(d, "PCAStats.update")
        if n == 0:
            return self
        _check_finite(backend, x, "PCAStats.update")
        mean = backend.mean(x, axis=0)
        centred = backend.subtract(x, mean)
        scatter = backend.matmul(backend.transpose(centred), centred)
        mean64 = np.asarray(backend.to_numpy(mean), dtype=np.float64)
        scatter64 = np.asarray(backend.to_numpy(scatter), dtype=np.float64)
        scatter64 = (scatter64 + scatter64.T) * 0.5  # exact symmetry (float32 products may differ in the last bit)
        self._absorb(n, mean64, scatter64)
        return self

    def update_windows(self, rows, window_size: int, stride: int) -> "PCAStats":
        """Add the windows of ``rows`` without building them: the same statistics as
        ``update(stride_windows(rows, window_size, stride))``, from the (n, F) rows.

        The rows are centred once by their own mean (n x F, cheap). Block (i, j) of the window
        scatter (window positions i <= j, F x F) is a product of two strided row slices, and with
        ``i = a + p * stride`` it only depends on (a_i, a_j, p_j - p_i) up to a few edge rows; so each
        distinct key is one product over the union of the ranges, and each block subtracts its few
        edge rows (stride 1: ``window_size`` products instead of ``window_size * (window_size + 1) / 2``).
        The (m, window_size * F) window matrix is never materialised. The scatter about the exact
        window mean follows from the shifted-data identity ``S = Y.T @ Y - m * delta delta.T``
        (delta = mean of the centred windows, small). Returns self; fewer than ``window_size``
        rows is a no-op.
        """
        from .windows import window_count

        backend, r = _as_batch(rows)
        n, features = int(r.shape[0]), int(r.shape[1])
        m = window_count(n, window_size, stride)
        w, s, d = int(window_size), int(stride), int(window_size) * features
        self._check_features(d, "PCAStats.update_windows")
        if m == 0:
            return self
        r = r[: (m - 1) * s + w]
        _check_finite(backend, r, "PCAStats.update_windows")
        shift = backend.mean(r, axis=0)
        centred = backend.subtract(r, shift)

        def rows_of(a: int, u0: int, u1: int):  # Q_a[u0:u1], Q_a[u] = centred[a + u * s]
            return centred[a + u0 * s : a + (u1 - 1) * s + 1 : s]

        def product(a: int, b: int, dp: int, u0: int, u1: int):  # sum over u in [u0, u1) of Q_a[u] Q_b[u + dp]^T
            return backend.matmul(backend.transpose(rows_of(a, u0, u1)), rows_of(b, u0 + dp, u1 + dp))

        position = [divmod(i, s)[::-1] for i in range(w)]  # i -> (a, p) with i = a + p * s
        pairs = [(i, j) for i in range(w) for j in range(i, w)]
        keys: dict[tuple[int, int, int], list[int]] = {}
        for i, j in pairs:
            (a, p), (b, q) = position[i], position[j]
            span = keys.setdefault((a, b, q - p), [p, p + m])
            span[0], span[1] = min(span[0], p), max(span[1], p + m)
        full = {key: product(*key, *span) for key, span in keys.items()}
        # edge corrections: rows of the key's range outside this pair's windows
        edges = {}
        for i, j in pairs:
            (a, p), (b, q) = position[i], position[j]
            lo, hi = keys[(a, b, q - p)]
            parts = [product(a, b, q - p, u0, u1) for u0, u1 in ((lo, p), (p + m, hi)) if u1 > u0]
            if parts:
                edges[(i, j)] = parts[0] if len(parts) == 1 else backend.add(parts[0], parts[1])
        ones = backend.add(backend.zeros((1, m), backend.dtype_name(r)), 1)
        sums = [backend.matmul(ones, rows_of(*position[i], position[i][1] + m)) for i in range(w)]
        order = list(full) + list(edges)
        stacked = backend.stack([full[k] for k in full] + [edges[k] for k in edges])
        blocks = dict(zip(order, np.asarray(backend.to_numpy(stacked), dtype=np.float64)))
        sums64 = np.asarray(backend.to_numpy(backend.concat(sums, axis=1)), dtype=np.float64).reshape(d)

        raw = np.empty((d, d), dtype=np.float64)
        for i, j in pairs:
            (a, p), (b, q) = position[i], position[j]
            block = blocks[(a, b, q - p)] - blocks[(i, j)] if (i, j) in blocks else blocks[(a, b, q - p)]
            raw[i * features : (i + 1) * features, j * features : (j + 1) * features] = block
            raw[j * features : (j + 1) * features, i * features : (i + 1) * features] = block.T
        delta = sums64 / m
        scatter = raw - m * np.outer(delta, delta)
        mean = np.tile(np.asarray(backend.to_numpy(shift), dtype=np.float64), w) + delta
        self._absorb(m, mean, (scatter + scatter.T) * 0.5)
        return self

    def merge(self, other: "PCAStats") -> "PCAStats":
        """Combined statistics of ``self`` and ``other`` as a new object (neither is changed)."""
        if not isinstance(other, PCAStats):
            raise TypeError(f"PCAStats.merge expects PCAStats, got {type(other).__name__}")
        if self.n_features is not None and other.n_features is not None:
            self._check_features(other.n_features, "PCAStats.merge")
        out = PCAStats(self.n_features if self.n_features is not None else other.n_features)
        out._absorb(self.n_samples, self.mean, self.scatter)
        out._absorb(other.n_samples, other.mean, other.scatter)
        return out

    def __add__(self, other: "PCAStats") -> "PCAStats":
        return self.merge(other)

    @property
    def covariance(self) -> np.ndarray:
        """Sample covariance (d, d), ``scatter / (n - 1)``."""
        if self.n_samples < 2:
            raise ValueError(f"covariance needs at least 2 samples, these statistics hold {self.n_samples}")
        return self.scatter / (self.n_samples - 1)

    # fitting
    def fit(self, n_components: int) -> "PCAModel":
        """Principal components by float64 symmetric eigendecomposition of the scatter matrix."""
        n, d = self.n_samples, self.n_features or 0
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples to fit, these statistics hold {n}")
        limit = min(n, d)
        k = _check_n_components(n_components, limit, n, d)
        eigenvalues, eigenvectors = np.linalg.eigh(self.scatter)
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
            "scatter": self.scatter.astype(np.float64, copy=True),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "PCAStats":
        _require(arrays, ("n_samples", "mean", "scatter"), "PCAStats")
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        scatter = np.asarray(arrays["scatter"], dtype=np.float64)
        n_features = int(arrays["n_features"]) if "n_features" in arrays else mean.shape[0]
        out = cls(None if n_features < 0 else n_features)
        d = out.n_features or 0
        if mean.shape != (d,) or scatter.shape != (d, d):
            raise ValueError(f"PCAStats.from_arrays: mean {mean.shape} / scatter {scatter.shape} do not match {d} features")
        out.n_samples = int(arrays["n_samples"])
        out.mean, out.scatter = mean.copy(), scatter.copy()
        return out


class PCAModel:
    """A fitted PCA with scikit-learn's attribute names (NumPy arrays).

    components_ (k, d), mean_ (d,), explained_variance_ (k,) (divided by n - 1),
    explained_variance_ratio_ (k,) (of the total variance), singular_values_ (k,),
    noise_variance_ (float), n_components_, n_samples_, n_features_in_.
    """

    def __init__(self, components, mean, explained_variance, explained_variance_ratio, singular_values, noise_variance, n_samples):
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
        return f"PCAModel(n_components={self.n_components_}, n_features_in={self.n_features_in_}, n_samples={self.n_samples_})"

    def _on(self, backend, dtype: str):
        """(mean_ @ components_.T, components_.T) on ``backend`` in ``dtype``, uploaded once and cached."""
        key = (backend.name, str(getattr(backend, "device", "")), dtype)
        if key not in self._cache:
            bias = self.mean_ @ self.components_.T
            self._cache[key] = (backend.asarray(bias, dtype), backend.asarray(np.ascontiguousarray(self.components_.T), dtype))
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

    def inverse_transform(self, Z):
        """Back from (n, k) projections to (n, d): ``Z @ components_ + mean_`` (same array kind and dtype)."""
        backend, z = self._check_input(Z, self.n_components_, "inverse_transform")
        dtype = backend.dtype_name(z)
        _, components_t = self._on(backend, dtype)
        return backend.add(backend.matmul(z, backend.transpose(components_t)), backend.asarray(self.mean_, dtype))

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
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "PCAModel":
        keys = ("components", "mean", "explained_variance", "explained_variance_ratio", "singular_values", "noise_variance", "n_samples")
        _require(arrays, keys, "PCAModel")
        model = cls(**{k: arrays[k] for k in keys[:-2]}, noise_variance=float(arrays["noise_variance"]), n_samples=int(arrays["n_samples"]))
        k, d = model.components_.shape
        if model.mean_.shape != (d,) or any(getattr(model, a).shape != (k,) for a in ("explained_variance_", "explained_variance_ratio_", "singular_values_")):
            raise ValueError(f"PCAModel.from_arrays: array shapes do not match components {model.components_.shape}")
        return model


__all__ = ["PCAStats", "PCAModel"]
