"""NumPy backend: the reference face every backend module repeats.

Arrays are ``numpy.ndarray``. Shapes are given as (rows, features) where it matters.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


def dtype_key(dtype) -> str | None:
    """Normalise a dtype given as a string, NumPy dtype or backend dtype to "float32", "float64", ..."""
    if dtype is None:
        return None
    text = str(dtype).replace("torch.", "").replace("mlx.core.", "")
    if text in _DTYPES:
        return text
    return np.dtype(dtype).name


def _blas_ready(x):
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.flags.c_contiguous or x.flags.f_contiguous:
        return x
    size = x.itemsize
    (rows, cols), (row_step, col_step) = x.shape, x.strides
    if (col_step == size and row_step % size == 0 and row_step >= cols * size) or (
        row_step == size and col_step % size == 0 and col_step >= rows * size
    ):
        return x
    return np.ascontiguousarray(x)


class Backend:
    name = "numpy"
    pi = math.pi

    def __init__(self, device: str | None = None):
        if device not in (None, "cpu"):
            raise ValueError(f"numpy backend runs on the CPU only; device={device!r} is not supported")
        self.device = "cpu"

    def __repr__(self) -> str:
        return f"<emberharmony backend {self.name} on {self.device}>"

    # conversion at the edges
    def asarray(self, x, dtype=None):
        """NumPy array or list -> backend array (no copy when already right)."""
        return np.asarray(x, dtype=_DTYPES.get(dtype_key(dtype)) if dtype is not None else None)

    def to_numpy(self, x) -> np.ndarray:
        """Backend array -> NumPy array."""
        return np.asarray(x)

    def dtype_name(self, x) -> str:
        return np.asarray(x).dtype.name

    def astype(self, x, dtype):
        return x.astype(_DTYPES[dtype_key(dtype)], copy=False)

    def is_array(self, x) -> bool:
        return isinstance(x, np.ndarray)

    # elementwise
    def sin(self, x):
        return np.sin(x)

    def cos(self, x):
        return np.cos(x)

    def abs(self, x):
        return np.abs(x)

    def sqrt(self, x):
        return np.sqrt(x)

    def isnan(self, x):
        return np.isnan(x)

    def where(self, condition, a, b):
        return np.where(condition, a, b)

    def add(self, a, b):
        """a + b with broadcasting."""
        return np.add(a, b)

    def subtract(self, a, b):
        """a - b with broadcasting."""
        return np.subtract(a, b)

    def floor_divide(self, a, b):
        return np.floor_divide(a, b)

    def remainder(self, a, b):
        return np.remainder(a, b)

    # creation and shape
    def zeros(self, shape, dtype="float32"):
        return np.zeros(shape, dtype=_DTYPES[dtype_key(dtype)])

    def arange(self, start, stop, step=1, dtype="int64"):
        return np.arange(start, stop, step, dtype=_DTYPES[dtype_key(dtype)])

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def transpose(self, x):
        """(n, d) -> (d, n)."""
        return x.T

    def concat(self, xs, axis=0):
        return np.concatenate(xs, axis=axis)

    def stack(self, xs, axis=0):
        return np.stack(xs, axis=axis)

    def take(self, x, indices, axis=0):
        return np.take(x, indices, axis=axis)

    def contiguous(self, x):
        """x as a C-ordered array: x itself when it already is, else a copy (e.g. of an overlapping window view)."""
        return np.ascontiguousarray(x)

    def sliding_windows(self, x, window_size: int, stride: int):
        """(n, F) -> (m, window_size, F) view of the windows starting at rows 0, s, 2s, ...

        Zero-copy; m = (n - window_size) // stride + 1 when n >= window_size, else 0.
        """
        if x.shape[0] < window_size:
            return np.zeros((0, window_size) + tuple(x.shape[1:]), dtype=x.dtype)
        return sliding_window_view(x, window_size, axis=0)[::stride].transpose(0, 2, 1)

    # reductions and linear algebra
    def sum(self, x, axis=None):
        return np.sum(x, axis=axis)

    def mean(self, x, axis=None):
        return np.mean(x, axis=axis)

    def matmul(self, a, b):
        """a @ b. A 2-D operand whose strides BLAS cannot take (e.g. overlapping window rows) is
        copied to C order first: NumPy would otherwise use its unblocked fallback loop, many times slower."""
        return _blas_ready(a) @ _blas_ready(b)

    def all_finite(self, x) -> bool:
        return bool(np.isfinite(x).all())

    def eigh(self, matrix):
        """Symmetric eigendecomposition in float64: (eigenvalues ascending (d,), eigenvectors (d, d) as columns)."""
        return np.linalg.eigh(np.asarray(matrix, dtype=np.float64))

    def set_threads(self, n: int) -> None:
        """Use ``n`` CPU threads for matrix products (NumPy's BLAS: OpenBLAS, MKL, ...) in this process from now on."""
        threadpool_limits(limits=int(n), user_api="blas")

    def synchronize(self) -> None:
        """Wait for queued work (a no-op here; torch CUDA and MLX are asynchronous)."""
