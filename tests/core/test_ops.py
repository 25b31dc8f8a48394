"""Every backend's face against NumPy: values, dtypes, windows, dispatch errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from emberharmony_core import ops
from emberharmony_core.ops import BackendUnavailableError, available_backends, backend_of, get_backend

RNG = np.random.default_rng(7)
X32 = RNG.standard_normal((13, 4)).astype(np.float32)
Y32 = RNG.standard_normal((4, 3)).astype(np.float32)
POS = (np.abs(X32) + 0.5).astype(np.float32)


def close(backend, got, want, rtol=1e-5, atol=1e-6):
    got = backend.to_numpy(got)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "op, args, ref",
    [
        ("sin", (X32,), np.sin),
        ("cos", (X32,), np.cos),
        ("abs", (X32,), np.abs),
        ("sqrt", (POS,), np.sqrt),
        ("transpose", (X32,), np.transpose),
        ("add", (X32, X32[0]), np.add),
        ("subtract", (X32, X32[0]), np.subtract),
        ("matmul", (X32, Y32), np.matmul),
        ("floor_divide", (POS * 10, np.float32(3)), np.floor_divide),
        ("remainder", (POS * 10, np.float32(3)), np.remainder),
    ],
)
def test_elementwise_and_linear_ops_match_numpy(backend, op, args, ref):
    inputs = [backend.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    out = getattr(backend, op)(*inputs)
    close(backend, out, ref(*args))
    assert backend.dtype_name(out) == "float32"


def test_reductions_shapes_and_creation(backend):
    x = backend.asarray(X32)
    close(backend, backend.sum(x, axis=0), X32.sum(axis=0))
    close(backend, backend.mean(x, axis=0), X32.mean(axis=0))
    assert abs(float(backend.to_numpy(backend.sum(x))) - float(X32.sum())) < 1e-4
    close(backend, backend.reshape(x, (4, 13)), X32.reshape(4, 13))
    close(backend, backend.concat([x, x], axis=1), np.concatenate([X32, X32], axis=1))
    close(backend, backend.stack([x, x]), np.stack([X32, X32]))
    close(backend, backend.take(x, [3, 0, 3], axis=0), X32[[3, 0, 3]])
    close(backend, backend.where(backend.asarray(X32 > 0), x, backend.zeros(X32.shape)), np.where(X32 > 0, X32, 0))
    np.testing.assert_array_equal(
        backend.to_numpy(backend.isnan(backend.asarray(np.array([1.0, np.nan])))), [False, True]
    )
    np.testing.assert_array_equal(backend.to_numpy(backend.arange(2, 11, 3)), np.arange(2, 11, 3))
    assert backend.dtype_name(backend.zeros((2, 3), "float64")) == "float64"
    assert backend.all_finite(x) and not backend.all_finite(backend.asarray(np.array([1.0, np.inf])))
    backend.synchronize()


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_dtype_is_preserved(backend, dtype):
    data = (X32 * 10).astype(dtype)
    x = backend.asarray(data)
    assert backend.dtype_name(x) == dtype
    assert backend.to_numpy(x).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(backend.to_numpy(x), data)
    if dtype.startswith("float"):
        for out in (
            backend.sin(x),
            backend.mean(x, axis=0),
            backend.matmul(backend.transpose(x), x),
            backend.subtract(x, x),
        ):
            assert backend.dtype_name(out) == dtype
    assert backend.dtype_name(backend.astype(x, "float64")) == "float64"


def test_float64_keeps_float64_precision(backend):
    """MLX silently downcasts float64 unless asked; the face must not."""
    value = np.array([1.0 + 1e-12, 2.0], dtype=np.float64)
    x = backend.asarray(value)
    assert backend.dtype_name(x) == "float64"
    assert backend.to_numpy(backend.subtract(x, backend.asarray(np.array([1.0, 2.0]))))[0] == pytest.approx(
        1e-12, rel=1e-3
    )
    assert backend.dtype_name(backend.asarray(X32, "float64")) == "float64"


@pytest.mark.parametrize("n, w, s", [(10, 3, 1), (10, 3, 2), (10, 3, 4), (7, 7, 1), (5, 6, 1), (11, 1, 3), (12, 4, 5)])
def test_sliding_windows_match_numpy(backend, n, w, s):
    data = RNG.standard_normal((n, 3))
    got = backend.to_numpy(backend.sliding_windows(backend.asarray(data), w, s))
    want = np.array([data[i : i + w] for i in range(0, n - w + 1, s)]).reshape(-1, w, 3)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_eigh_is_float64_and_correct(backend):
    a = RNG.standard_normal((6, 6))
    sym = a @ a.T
    values, vectors = backend.eigh(backend.asarray(sym))
    values, vectors = backend.to_numpy(values), backend.to_numpy(vectors)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, np.linalg.eigvalsh(sym), rtol=1e-10)
    np.testing.assert_allclose(vectors @ np.diag(values) @ vectors.T, sym, atol=1e-10)


def test_backend_of_round_trips(backend):
    x = backend.asarray(X32)
    assert backend_of(x).name == backend.name
    assert backend_of(X32).name == "numpy"
    assert isinstance(backend.to_numpy(x), np.ndarray)


def test_numpy_matmul_on_overlapping_view_is_exact():
    numpy_backend = get_backend("numpy")
    data = RNG.standard_normal((50, 4))
    view = numpy_backend.reshape(numpy_backend.sliding_windows(data, 5, 1), (46, 20))  # overlapping rows
    weights = RNG.standard_normal((20, 3))
    np.testing.assert_allclose(numpy_backend.matmul(view, weights), np.ascontiguousarray(view) @ weights, rtol=1e-12)


def test_every_backend_is_installed():
    assert set(available_backends()) == {"numpy", "torch", "mlx"}


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("jax")
    message = str(info.value)
    assert "jax" in message
    for name in available_backends():
        assert name in message
    with pytest.raises(BackendUnavailableError):
        get_backend(None)


def test_backend_names_are_case_insensitive():
    assert get_backend(" NumPy ").name == "numpy"


@pytest.mark.skipif(sys.platform == "darwin", reason="MLX is a valid auto choice on Apple silicon")
def test_auto_never_picks_mlx_off_apple():
    chosen = get_backend("auto")
    assert chosen.name in {"numpy", "torch"}
    assert ops._auto_choice()[0] != "mlx"


def test_set_threads_limits_the_matrix_products_threads(backend):
    """NumPy: the BLAS library's threads (threadpoolctl's view); torch: its intra-op pool; MLX: accepted, no-op."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    try:
        backend.set_threads(1)
        if backend.name == "numpy":
            assert blas_threads() and set(blas_threads()) == {1}
        if backend.name == "torch":
            import torch

            assert torch.get_num_threads() == 1
        x = backend.asarray(np.eye(3))
        assert np.allclose(backend.to_numpy(backend.matmul(x, x)), np.eye(3))  # still computes
    finally:
        backend.set_threads(max(before or [1]))


def test_default_threads_leave_one_core_and_take_at_least_one():
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert ops.default_threads() == max(1, cores - 1) >= 1
