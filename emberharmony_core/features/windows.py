"""Stride windows: the seed's Python loop over window starts, as one strided view and one reshape.

    windows = stride_windows(data, window_size=5, stride=3, backend=backend)   # (m, 5 * F)

Row ``k`` of the result is ``data[k*s : k*s + w]`` flattened in time order, exactly the seed's
``np.array([data[i:i+w].reshape(-1) for i in range(0, n-w+1, s)])``. On NumPy and torch the
result is a zero-copy view of ``data`` (its rows overlap when ``stride < window_size``); copy it
if you need to write to it.
"""

from __future__ import annotations

import numpy as np

from ..ops import backend_of, get_backend


def check_setting(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def window_count(n_rows: int, window_size: int, stride: int) -> int:
    """Number of windows ``stride_windows`` makes from ``n_rows`` rows (0 when ``n_rows < window_size``)."""
    window_size = check_setting("window_size", window_size)
    stride = check_setting("stride", stride)
    return 0 if n_rows < window_size else (int(n_rows) - window_size) // stride + 1


def window_end_rows(n_rows: int, window_size: int, stride: int) -> np.ndarray:
    """Row index (into the same ``data``) of the last row of each window, as int64 of shape (m,).

    Useful for keeping only the windows whose last row lies in the current partition when
    ``data`` is the previous partition's tail followed by the current rows.
    """
    m = window_count(n_rows, window_size, stride)
    return np.arange(m, dtype=np.int64) * stride + (window_size - 1)


def stride_windows(data, window_size: int, stride: int, backend=None):
    """Sliding windows of ``data`` flattened to rows.

    Parameters
    ----------
    data : (n, F) array (NumPy or the backend's own array); a 1-D array is one feature.
    window_size : rows per window, >= 1.
    stride : rows between window starts, >= 1 (windows start at rows 0, s, 2s, ...).
    backend : backend object or name; ``None`` uses the backend that holds ``data``.

    Returns
    -------
    (m, window_size * F) backend array with m = (n - window_size) // stride + 1, or
    (0, window_size * F) when n < window_size. Same dtype as ``data``.
    """
    window_size = check_setting("window_size", window_size)
    stride = check_setting("stride", stride)
    if backend is None:
        backend = backend_of(data)
    elif isinstance(backend, str):
        backend = get_backend(backend)
    x = backend.asarray(data)
    if len(x.shape) == 1:
        x = backend.reshape(x, (x.shape[0], 1))
    if len(x.shape) != 2:
        raise ValueError(f"stride_windows expects an (n, F) array, got shape {tuple(x.shape)}")
    n, features = int(x.shape[0]), int(x.shape[1])
    m = 0 if n < window_size else (n - window_size) // stride + 1
    views = backend.sliding_windows(x, window_size, stride)  # (m, w, F), zero-copy where the backend can
    return backend.reshape(views, (m, window_size * features))


__all__ = ["stride_windows", "window_count", "window_end_rows"]
