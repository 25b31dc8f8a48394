"""stride_windows against the seed's loop definition, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from emberharmony_core.features import stride_windows
from emberharmony_core.features.windows import window_count, window_end_rows


def seed_windows(data: np.ndarray, w: int, s: int) -> np.ndarray:
    n, features = data.shape
    rows = [data[i : i + w].reshape(-1) for i in range(0, n - w + 1, s)]
    return np.array(rows).reshape(len(rows), w * features)


CASES = [(n, f, w, s) for n in (0, 1, 4, 5, 6, 17, 64) for f in (1, 3) for w in (1, 2, 5) for s in (1, 2, 3, 5, 7)]


def test_matches_seed_loop_on_many_shapes(backend):
    rng = np.random.default_rng(3)
    for n, f, w, s in CASES:
        data = rng.standard_normal((n, f)).astype(np.float32)
        got = stride_windows(backend.asarray(data), w, s, backend)
        assert backend.is_array(got)
        got = backend.to_numpy(got)
        want = seed_windows(data, w, s)
        assert got.shape == want.shape == (window_count(n, w, s), w * f), (n, f, w, s)
        np.testing.assert_array_equal(got, want, err_msg=str((n, f, w, s)))


@pytest.mark.parametrize("n, w", [(3, 5), (4, 5), (0, 2)])
def test_too_few_rows_gives_zero_windows(backend, n, w):
    out = stride_windows(np.ones((n, 4), dtype=np.float32), w, 2, backend)
    assert tuple(backend.to_numpy(out).shape) == (0, w * 4)


def test_exactly_one_window_when_n_equals_window(backend):
    data = np.arange(15, dtype=np.float64).reshape(5, 3)
    out = backend.to_numpy(stride_windows(data, 5, 4, backend))
    np.testing.assert_array_equal(out, data.reshape(1, 15))
    assert out.dtype == np.float64


def test_stride_larger_than_window_skips_rows(backend):
    data = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = backend.to_numpy(stride_windows(data, 2, 4, backend))
    np.testing.assert_array_equal(out, [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]])


def test_backends_agree_and_keep_dtype(backend):
    rng = np.random.default_rng(11)
    data = rng.standard_normal((41, 6))
    reference = stride_windows(data, 5, 3, "numpy")
    out = stride_windows(backend.asarray(data), 5, 3, backend)
    assert backend.dtype_name(out) == "float64"
    np.testing.assert_array_equal(backend.to_numpy(out), reference)


def test_numpy_result_is_a_view():
    data = np.zeros((100, 4), dtype=np.float32)
    assert np.shares_memory(stride_windows(data, 5, 1, "numpy"), data)


def test_one_dimensional_input_is_one_feature():
    np.testing.assert_array_equal(stride_windows(np.arange(6.0), 3, 2, "numpy"), [[0, 1, 2], [2, 3, 4]])


def test_backend_defaults_to_the_arrays_own(backend):
    out = stride_windows(backend.asarray(np.ones((6, 2), dtype=np.float32)), 3, 1)
    assert backend.is_array(out)


@pytest.mark.parametrize(
    "setting, value, error",
    [
        ("window_size", 0, ValueError),
        ("window_size", -2, ValueError),
        ("stride", 0, ValueError),
        ("stride", 1.5, TypeError),
        ("window_size", True, TypeError),
    ],
)
def test_bad_settings_raise_naming_the_setting(setting, value, error):
    kwargs = {"window_size": 3, "stride": 1, setting: value}
    with pytest.raises(
        error, match=f"{setting}.*{value!r}" if error is TypeError else f"{setting} must be >= 1, got {value}"
    ):
        stride_windows(np.ones((10, 2)), backend="numpy", **kwargs)


def test_three_dimensional_input_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        stride_windows(np.ones((4, 2, 2)), 2, 1, "numpy")


def test_window_end_rows():
    np.testing.assert_array_equal(window_end_rows(10, 3, 2), [2, 4, 6, 8])
    assert window_end_rows(2, 3, 1).shape == (0,)
    assert window_count(10, 3, 2) == 4 and window_count(2, 3, 1) == 0


@pytest.mark.parametrize("key_type", ["string", "int64"])
def test_the_windower_finds_the_same_windows_from_arrow_keys_as_from_python_keys(key_type):
    """Entity runs found in Arrow (``chunk_rows``) and from Python keys (``ChunkRows``) give the same windows, drops
    and carry, chunk after chunk; a split change inside an entity drops the windows that span it."""
    import pyarrow as pa

    from emberharmony_core.ops import get_backend
    from emberharmony_core.windowing import SPLITS, ChunkRows, Windower, chunk_rows

    rng = np.random.default_rng(5)
    entities = np.repeat([1, 2, 3, 7], [2, 6, 9, 14])  # grouped, ascending; one entity shorter than a window
    n = len(entities)
    split = np.array(["train"] * n, dtype=object)
    split[18:21] = "test"  # inside entity 7
    table = pa.table(
        {
            "e": pa.array(entities.astype(str) if key_type == "string" else entities),
            "ts": pa.array(np.arange(n) * 3_600_000_000_000, pa.timestamp("ns", tz="UTC")),
            "split": pa.array(split),
            "x": rng.standard_normal(n),
            "y": rng.standard_normal(n),
        }
    )
    backend = get_backend("numpy")
    arrow_side, python_side = Windower(3, [1, 2]), Windower(3, [1, 2])
    mixed = 0
    for lo, hi in ((0, 10), (10, 11), (11, n)):  # chunks cut inside entities
        part = table.slice(lo, hi - lo)
        from_arrow = chunk_rows(part, ["x", "y"], "e", "ts", "float64")
        assert from_arrow.entity is None and from_arrow.entity_arrow is not None
        keys = part["e"].to_numpy().astype(object)
        from_python = ChunkRows(from_arrow.features, keys, from_arrow.time, from_arrow.split)
        a, b = arrow_side.add(from_arrow, backend), python_side.add(from_python, backend)
        for s in (1, 2):
            np.testing.assert_array_equal(a.starts[s], b.starts[s])
            np.testing.assert_array_equal(a.end_row[s], b.end_row[s])
            np.testing.assert_array_equal(a.split[s], b.split[s])
            assert (a.candidates[s], a.mixed_split_dropped[s], a.expected[s]) == (
                b.candidates[s],
                b.mixed_split_dropped[s],
                b.expected[s],
            )
        np.testing.assert_array_equal(a.rows, b.rows)
        assert [SPLITS[c] for c in from_arrow.split] == list(split[lo:hi])
        mixed += a.mixed_split_dropped[1]
    arrow_carry, python_carry = arrow_side.finish(), python_side.finish()
    assert arrow_carry.keys.to_pylist() == python_carry.keys.to_pylist() == sorted(set(table["e"].to_pylist()))
    np.testing.assert_array_equal(arrow_carry.rows, python_carry.rows)
    # entity 7's series: train, test x 3, train x 10; of its stride-1 windows (ending on rows 2..13) those ending on
    # rows 2, 4 and 5 mix the two splits (the one ending on row 3 is all test)
    assert mixed == 3


def test_an_unknown_split_name_from_arrow_is_named():
    import pyarrow as pa

    from emberharmony_core.windowing import chunk_rows

    table = pa.table(
        {
            "e": ["a", "a"],
            "ts": pa.array([0, 1], pa.timestamp("ns", tz="UTC")),
            "split": ["train", "holdout"],
            "x": [1.0, 2.0],
        }
    )
    with pytest.raises(ValueError, match=r"split column holds \['holdout'\]"):
        chunk_rows(table, ["x"], "e", "ts")


@pytest.mark.parametrize("strides", [(1, 3, 5), (2, 3), (3,), (1, 1, 4)])
def test_statistics_of_all_strides_at_once_equal_each_strides_own_windows_in_float64(strides):
    """Windows shared by several strides are multiplied once: each stride's statistics still equal those of its
    own train windows (gathered from the rows, NumPy float64), across entities, carried rows and split drops."""
    from emberharmony_core.features.pca import PCAStats, window_stats_by_stride
    from emberharmony_core.ops import get_backend
    from emberharmony_core.windowing import ChunkRows, Windower

    rng = np.random.default_rng(11)
    backend = get_backend("numpy")
    entity = np.repeat(np.array(["a", "b", "c", "d"], dtype=object), [40, 3, 57, 26])
    n = len(entity)
    split = np.zeros(n, np.int8)
    split[50:60] = 2  # test rows inside entity c: windows across the change are dropped
    rows = ChunkRows(rng.standard_normal((n, 3)), entity, np.arange(n, dtype=np.int64), split)
    windower = Windower(4, strides, n_features=3, dtype="float64")
    windower.add(
        ChunkRows(rows.features[:30], entity[:30], rows.time[:30], split[:30]), backend
    )  # a carry into the next
    made = windower.add(ChunkRows(rows.features[30:], entity[30:], rows.time[30:], split[30:]), backend)
    together = window_stats_by_stride(made, strides)
    assert sorted(together) == sorted(set(strides))
    for s in set(strides):
        starts = made.starts[s][made.split[s] == 0]
        windows = np.stack([made.rows[a : a + 4].reshape(-1) for a in starts])
        own = PCAStats(12).update(windows)
        assert together[s].n_samples == own.n_samples == len(starts) > 0
        np.testing.assert_allclose(together[s].mean, windows.mean(axis=0), rtol=1e-12, atol=1e-12)
        centred = windows - windows.mean(axis=0)
        np.testing.assert_allclose(together[s].scatter, centred.T @ centred, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(together[s].scatter, own.scatter, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_statistics_from_shifted_blocks_equal_the_windows_own_for_any_runs_and_strides(backend, dtype):
    """Block-rows s .. w - 1 of a stride's Gram come from its first s block-rows and each run's first and last
    window (strides shorter than the window), or straight from the windows (strides >= w): both equal the
    statistics of the gathered windows in float64, for starts in runs broken at random, on every backend."""
    from emberharmony_core.features.pca import stats_by_stride
    from emberharmony_core.windowing import series_starts

    rng = np.random.default_rng(5)
    for _ in range(12):
        n, f, w = int(rng.integers(30, 300)), int(rng.integers(1, 5)), int(rng.integers(1, 9))
        rows = (rng.standard_normal((n, f)) * 3 + 40).astype(dtype)
        starts = {}
        for s in (1, 2, 3, 5, 11):
            t = series_starts(n, w, s, int(rng.integers(0, 11)))
            starts[s] = t[rng.random(len(t)) > rng.random() * 0.6]  # runs broken at random, some strides empty
        got = stats_by_stride(backend, backend.asarray(rows), w, starts)
        for s, t in starts.items():
            assert got[s].n_samples == len(t)
            if not len(t):
                continue
            windows = np.stack([rows[a : a + w].reshape(-1).astype(np.float64) for a in t])
            centred = windows - windows.mean(axis=0)
            np.testing.assert_allclose(got[s].mean, windows.mean(axis=0), rtol=1e-12)
            scale = np.abs(centred.T @ centred).max()
            np.testing.assert_allclose(got[s].scatter, centred.T @ centred, rtol=0, atol=1e-11 * scale)
