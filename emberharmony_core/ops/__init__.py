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
import importlib.util
import logging
import os
import platform
import sys
from functools import cache

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("numpy", "torch", "mlx")
_MODULES = {
    "numpy": "emberharmony_core.ops.numpy_backend",
    "torch": "emberharmony_core.ops.torch_backend",
    "mlx": "emberharmony_core.ops.mlx_backend",
}


class BackendUnavailableError(ValueError):
    """An unknown backend name, or a backend whose library is not installed."""


@cache
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


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (importing torch takes seconds)."""
    return importlib.util.find_spec(module) is not None


def _nvidia_driver_present() -> bool:
    """A CUDA device is possible only where NVIDIA's driver is loaded (checked without importing torch)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def _cuda_available() -> bool:
    if not (_installed("torch") and _nvidia_driver_present()):
        return False
    import torch

    return bool(torch.cuda.is_available())


def _measured_choice() -> tuple[str, str | None, str]:
    """(name, device, reason) for ``auto``.

    On a CPU the choice is NumPy: torch's faster matrix products do not pay for its import and the
    host/tensor copies at every chunk's edges (measured: docs/benchmarks.md, torch on a CPU); MLX off
    Apple silicon is far slower than NumPy and never chosen there."""
    if _cuda_available():
        return "torch", "cuda", "a CUDA device is present"
    if _is_apple_silicon() and _installed("mlx"):
        return "mlx", None, "Apple silicon"
    return (
        "numpy",
        None,
        "no CUDA device, not Apple silicon; torch on a CPU is no faster end to end, MLX is never chosen here",
    )


@cache
def _auto_choice() -> tuple[str, str | None, str]:
    """(name, device, reason) for ``auto``; measured and logged once per process."""
    name, device, reason = _measured_choice()
    logger.info("backend auto -> %s (%s)", name, reason)
    return name, device, reason


def get_backend(name: str = "auto", device: str | None = None):
    """Return a backend object (``.name`` in {"numpy", "torch", "mlx"}).

    ``name="auto"`` picks the fastest backend that is really usable here: torch on
    a CUDA device, MLX on Apple silicon, otherwise NumPy (never MLX on a non-Apple
    CPU; torch on a CPU measured no faster end to end). ``device`` is passed to torch
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


def default_threads() -> int:
    """CPU threads for a backend's matrix products in a pipeline run: one less than this process may use (the
    Parquet writer thread and Arrow take one), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def describe_backend(name: str, backend) -> str:
    """One line for logs: the backend ``get_backend(name)`` gave, its device, and for ``auto`` the reason."""
    device = getattr(backend, "device", None)
    text = backend.name + (f" on {device}" if device not in (None, "cpu") and str(device) != "cpu" else "")
    if str(name).strip().lower() == "auto":
        text += f" ({_auto_choice()[2]})"
    return text


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


@cache
def _backend_for(name: str, device: str | None):
    return _backend_class(name)(device=device)


__all__ = [
    "default_threads",
    "get_backend",
    "backend_of",
    "describe_backend",
    "available_backends",
    "BackendUnavailableError",
    "BACKEND_NAMES",
]
