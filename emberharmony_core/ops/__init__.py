"""The backend layer: one module per backend, one face, one dispatch point.

    backend = get_backend("auto")          # or "numpy", "torch", "mlx"
    x = backend.asarray(np_array)           # NumPy/list -> backend array
    y = backend.to_numpy(backend.sin(x))    # backend array -> NumPy

Every backend module defines a class ``Backend`` with the same methods (see
``numpy_backend.Backend`` for the reference face and docstrings). Feature code
calls those methods and never asks which backend it holds.
"""

from __future__ import annotations

import importlib
import logging
import platform
import sys
import time
from functools import lru_cache

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("numpy", "torch", "mlx")
_MODULES = {
    "numpy": "emberharmony_core.ops.numpy_backend",
    "torch": "emberharmony_core.ops.torch_backend",
    "mlx": "emberharmony_core.ops.mlx_backend",
}


class BackendUnavailableError(ValueError):
    """An unknown backend name, or a backend whose library is not installed."""


@lru_cache(maxsize=None)
def _backend_class(name: str):
    module = importlib.import_module(_MODULES[name])  # raises ImportError if its library is missing
    return module.Backend


def available_backends() -> tuple[str, ...]:
    """Names of the backends whose libraries import on this machine."""
    names = []
    for name in BACKEND_NAMES:
        try:
            _backend_class(name)
        except ImportError:
            continue
        names.append(name)
    return tuple(names)


def _is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _seconds_for_products(backend, repeats: int = 5) -> float:
    """Best wall time of a (20000, 80) x (80, 80) float32 product, the shape of a window scatter."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((20_000, 80), dtype=np.float32))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        backend.to_numpy(backend.matmul(backend.transpose(x), x))
        best = min(best, time.perf_counter() - start)
    return best


def _measured_choice() -> tuple[str, str | None, str]:
    """(name, device, reason) for ``auto``."""
    names = available_backends()
    if "torch" in names and _cuda_available():
        return "torch", "cuda", "a CUDA device is present"
    if "mlx" in names and _is_apple_silicon():
        return "mlx", None, "Apple silicon"
    if "torch" not in names:
        return "numpy", None, "torch is not installed; MLX is never chosen off Apple silicon"
    timings = {name: _seconds_for_products(_backend_class(name)()) for name in ("numpy", "torch")}
    name = min(timings, key=timings.get)
    figures = ", ".join(f"{n} {t * 1e3:.2f} ms" for n, t in timings.items())
    return name, None, f"fastest CPU matrix product measured here ({figures}); MLX is never chosen off Apple silicon"


@lru_cache(maxsize=None)
def _auto_choice() -> tuple[str, str | None, str]:
    """(name, device, reason) for ``auto``; measured and logged once per process."""
    name, device, reason = _measured_choice()
    logger.info("backend auto -> %s (%s)", name, reason)
    return name, device, reason


def get_backend(name: str = "auto", device: str | None = None):
    """Return a backend object (``.name`` in {"numpy", "torch", "mlx"}).

    ``name="auto"`` picks the fastest backend that is really usable here: torch on
    a CUDA device, MLX on Apple silicon, otherwise NumPy or torch by a one-off
    measurement (never MLX on a non-Apple CPU). ``device`` is passed to torch
    ("cpu", "cuda", "cuda:1", "mps") and MLX ("cpu", "gpu"); NumPy accepts only
    None or "cpu".
    """
    if not isinstance(name, str):
        raise BackendUnavailableError(f"backend name must be a string, got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        key, auto_device, reason = _auto_choice()
        device = device or auto_device
    if key not in _MODULES:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose 'auto' or one of the available backends: "
            f"{', '.join(available_backends()) or 'none'}"
        )
    try:
        cls = _backend_class(key)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {key!r} is not installed ({exc}); available backends: {', '.join(available_backends())}. "
            f"Install it with `pip install 'emberharmony[{key}]'`."
        ) from exc
    return cls(device=device)


def backend_of(x):
    """The backend that holds array ``x``: torch tensors -> torch (on the tensor's device),
    MLX arrays -> mlx, anything else (NumPy arrays, lists, scalars) -> numpy.

    Lets a function return the same kind of array it was given without asking which backend
    that is. Backend objects are cached per (name, device).
    """
    module = type(x).__module__ or ""
    if module.startswith("torch"):
        return _backend_for("torch", str(x.device))
    if module.startswith("mlx"):
        return _backend_for("mlx", None)
    return _backend_for("numpy", None)


@lru_cache(maxsize=None)
def _backend_for(name: str, device: str | None):
    return _backend_class(name)(device=device)


__all__ = ["get_backend", "backend_of", "available_backends", "BackendUnavailableError", "BACKEND_NAMES"]
