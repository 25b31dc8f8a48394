"""PyTorch backend: the face of ``numpy_backend.Backend`` over ``torch.Tensor`` (CPU, CUDA or MPS)."""

from __future__ import annotations

import math

import numpy as np
import torch

from .numpy_backend import dtype_key

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}


class Backend:
    name = "torch"
    pi = math.pi

    def __init__(self, device: str | None = None):
        self.device = torch.device(device or "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"torch device {device!r} was asked for, but CUDA is not available here")

    def __repr__(self) -> str:
        return f"<emberharmony backend {self.name} on {self.device}>"

    def asarray(self, x, dtype=None):
        target = _DTYPES[dtype_key(dtype)] if dtype is not None else None
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=target or x.dtype)
        array = np.asarray(x)
        if not array.flags.writeable or not (array.flags.c_contiguous or array.flags.f_contiguous):
            array = np.ascontiguousarray(array)
            if not array.flags.writeable:
                array = array.copy()
        tensor = torch.from_numpy(array)
        return tensor.to(device=self.device, dtype=target or tensor.dtype)

    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def dtype_name(self, x) -> str:
        key = dtype_key(x.dtype)
        assert key is not None  # dtype_key returns None only for a None dtype
        return key

    def astype(self, x, dtype):
        return x.to(_DTYPES[dtype_key(dtype)])

    def is_array(self, x) -> bool:
        return isinstance(x, torch.Tensor)

    def sin(self, x):
        return torch.sin(x)

    def cos(self, x):
        return torch.cos(x)

    def abs(self, x):
        return torch.abs(x)

    def sqrt(self, x):
        return torch.sqrt(x)

    def isnan(self, x):
        return torch.isnan(x)

    def where(self, condition, a, b):
        return torch.where(condition, a, b)

    def add(self, a, b):
        return torch.add(a, b)

    def subtract(self, a, b):
        return torch.sub(a, b)

    def floor_divide(self, a, b):
        return torch.div(a, b, rounding_mode="floor")

    def remainder(self, a, b):
        return torch.remainder(a, b)

    def zeros(self, shape, dtype="float32"):
        return torch.zeros(shape, dtype=_DTYPES[dtype_key(dtype)], device=self.device)

    def arange(self, start, stop, step=1, dtype="int64"):
        return torch.arange(start, stop, step, dtype=_DTYPES[dtype_key(dtype)], device=self.device)

    def reshape(self, x, shape):
        return torch.reshape(x, shape)

    def transpose(self, x):
        return x.T

    def concat(self, xs, axis=0):
        return torch.cat(list(xs), dim=axis)

    def stack(self, xs, axis=0):
        return torch.stack(list(xs), dim=axis)

    def take(self, x, indices, axis=0):
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(np.asarray(indices), device=x.device)
        return torch.index_select(x, axis, indices.to(device=x.device, dtype=torch.int64).reshape(-1)).reshape(
            tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1 :])
        )

    def contiguous(self, x):
        return x.contiguous()

    def sliding_windows(self, x, window_size: int, stride: int):
        """(n, F) -> (m, window_size, F) view (``Tensor.unfold``, zero-copy)."""
        if x.shape[0] < window_size:
            return x.new_zeros((0, window_size, x.shape[1]))
        return x.unfold(0, window_size, stride).transpose(1, 2)

    def sum(self, x, axis=None):
        return torch.sum(x) if axis is None else torch.sum(x, dim=axis)

    def mean(self, x, axis=None):
        return torch.mean(x) if axis is None else torch.mean(x, dim=axis)

    def matmul(self, a, b):
        return a @ b

    def all_finite(self, x) -> bool:
        return bool(torch.isfinite(x).all())

    def eigh(self, matrix):
        """Symmetric eigendecomposition in float64 (ascending eigenvalues, eigenvectors as columns)."""
        values, vectors = torch.linalg.eigh(self.asarray(matrix, "float64"))
        return values, vectors

    def set_threads(self, n: int) -> None:
        """``n`` CPU threads for torch's operators (its intra-op pool; a GPU's work is not affected)."""
        torch.set_num_threads(int(n))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
