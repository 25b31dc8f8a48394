"""MLX backend: the face of ``numpy_backend.Backend`` over ``mlx.core.array``.

MLX silently turns float64 NumPy input into float32 unless asked: ``asarray``
keeps the input's dtype. float64 work and ``eigh`` run on the CPU stream (MLX's
GPU has no float64).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from .numpy_backend import dtype_key

_DTYPES = {"float32": mx.float32, "float64": mx.float64, "int32": mx.int32, "int64": mx.int64, "bool": mx.bool_}


class Backend:
    name = "mlx"
    pi = math.pi

    def __init__(self, device: str | None = None):
        if device not in (None, "cpu", "gpu"):
            raise ValueError(f"mlx device must be 'cpu' or 'gpu', got {device!r}")
        if device is not None:
            mx.set_default_device(mx.cpu if device == "cpu" else mx.gpu)
        self.device = str(mx.default_device())

    def __repr__(self) -> str:
        return f"<emberharmony backend {self.name} on {self.device}>"

    def _stream(self, *arrays):
        """float64 has no GPU kernels in MLX: run it on the CPU stream."""
        return mx.cpu if any(a.dtype == mx.float64 for a in arrays) else None

    def asarray(self, x, dtype=None):
        if isinstance(x, mx.array):
            return x if dtype is None else x.astype(_DTYPES[dtype_key(dtype)])
        array = np.asarray(x)
        if array.dtype == np.bool_ and dtype is None:
            return mx.array(array)
        key = dtype_key(dtype) or array.dtype.name
        if key not in _DTYPES:
            raise TypeError(f"mlx backend cannot hold dtype {array.dtype} (supported: {', '.join(_DTYPES)})")
        return mx.array(np.ascontiguousarray(array), dtype=_DTYPES[key])

    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, mx.array):
            return np.array(x, copy=False) if x.dtype != mx.bfloat16 else np.array(x.astype(mx.float32))
        return np.asarray(x)

    def dtype_name(self, x) -> str:
        key = dtype_key(x.dtype)
        assert key is not None  # dtype_key returns None only for a None dtype
        return key

    def astype(self, x, dtype):
        return x.astype(_DTYPES[dtype_key(dtype)])

    def is_array(self, x) -> bool:
        return isinstance(x, mx.array)

    def sin(self, x):
        return mx.sin(x, stream=self._stream(x))

    def cos(self, x):
        return mx.cos(x, stream=self._stream(x))

    def abs(self, x):
        return mx.abs(x, stream=self._stream(x))

    def sqrt(self, x):
        return mx.sqrt(x, stream=self._stream(x))

    def isnan(self, x):
        return mx.isnan(x, stream=self._stream(x))

    def where(self, condition, a, b):
        return mx.where(condition, a, b)

    def add(self, a, b):
        return mx.add(a, b, stream=self._stream(*(v for v in (a, b) if isinstance(v, mx.array))))

    def subtract(self, a, b):
        return mx.subtract(a, b, stream=self._stream(*(v for v in (a, b) if isinstance(v, mx.array))))

    def floor_divide(self, a, b):
        return mx.floor_divide(a, b)

    def remainder(self, a, b):
        return mx.remainder(a, b)

    def zeros(self, shape, dtype="float32"):
        return mx.zeros(shape, dtype=_DTYPES[dtype_key(dtype)])

    def arange(self, start, stop, step=1, dtype="int64"):
        return mx.arange(start, stop, step, dtype=_DTYPES[dtype_key(dtype)])

    def reshape(self, x, shape):
        return mx.reshape(x, shape)

    def transpose(self, x):
        return mx.transpose(x)

    def concat(self, xs, axis=0):
        return mx.concatenate(list(xs), axis=axis)

    def stack(self, xs, axis=0):
        return mx.stack(list(xs), axis=axis)

    def take(self, x, indices, axis=0):
        if not isinstance(indices, mx.array):
            indices = mx.array(np.asarray(indices))
        return mx.take(x, indices, axis=axis)

    def contiguous(self, x):
        return mx.contiguous(x)

    def sliding_windows(self, x, window_size: int, stride: int):
        """(n, F) -> (m, window_size, F), stacked from ``window_size`` strided row slices.

        Not ``mx.as_strided``: in mlx 0.32 reductions over an overlapping as_strided view
        corrupt the heap (seen with stride 3, window 5), so MLX materialises the windows.
        """
        n, features = x.shape
        if n < window_size:
            return mx.zeros((0, window_size, features), dtype=x.dtype)
        last = (n - window_size) // stride * stride  # start row of the last window
        return mx.stack([x[i : i + last + 1 : stride] for i in range(window_size)], axis=1)

    def sum(self, x, axis=None):
        return mx.sum(x, axis=axis, stream=self._stream(x))

    def mean(self, x, axis=None):
        return mx.mean(x, axis=axis, stream=self._stream(x))

    def matmul(self, a, b):
        return mx.matmul(a, b, stream=self._stream(a, b))

    def all_finite(self, x) -> bool:
        return bool(mx.all(mx.isfinite(x)).item())

    def eigh(self, matrix):
        """Symmetric eigendecomposition in float64 on the CPU stream (ascending eigenvalues, eigenvector columns)."""
        values, vectors = mx.linalg.eigh(
            self.asarray(np.asarray(self.to_numpy(matrix), dtype=np.float64), "float64"), stream=mx.cpu
        )
        return values, vectors

    def set_threads(self, n: int) -> None:
        """A no-op: MLX has no setting for its CPU threads."""

    def synchronize(self) -> None:
        mx.synchronize()
