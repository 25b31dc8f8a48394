"""PCAStats / PCAModel against scikit-learn's full-SVD PCA, on every backend."""

from __future__ import annotations

import functools
import io
from itertools import pairwise

import numpy as np
import pytest
from sklearn.decomposition import PCA

from emberharmony_core.features import PCAModel, PCAStats, stride_windows

D, K = 12, 5


def make_data(n=3000, seed=0):
    """Rows with well-separated variances (eigenvalues 100 .. 0.25, ratio >= 1.7 between neighbours), rotated and
    offset."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.5, D)
    rotation, _ = np.linalg.qr(rng.standard_normal((D, D)))
    return (rng.standard_normal((n, D)) * scales) @ rotation.T + rng.uniform(-3, 3, D)


DATA = make_data()
REF = PCA(n_components=K, svd_solver="full").fit(DATA)


def batches(data, seed):
    """Shuffled rows cut into uneven batches."""
    rng = np.random.default_rng(seed)
    rows = data[rng.permutation(len(data))]
    cuts = np.sort(rng.choice(np.arange(1, len(rows)), size=9, replace=False))
    return np.split(rows, cuts)


def assert_matches_reference(model, ref=REF, cos_tol=1e-6, rtol=1e-6):
    cos = np.abs(np.sum(model.components_ * ref.components_, axis=1))
    assert cos.min() >= 1 - cos_tol, cos
    np.testing.assert_allclose(model.explained_variance_, ref.explained_variance_, rtol=rtol)
    np.testing.assert_allclose(model.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=rtol)
    np.testing.assert_allclose(model.singular_values_, ref.singular_values_, rtol=rtol)
    np.testing.assert_allclose(model.noise_variance_, ref.noise_variance_, rtol=max(rtol, 1e-6))
    np.testing.assert_allclose(model.mean_, ref.mean_, rtol=rtol, atol=rtol)
    assert model.n_components_ == ref.n_components_ and model.n_samples_ == ref.n_samples_
    assert model.n_features_in_ == ref.n_features_in_


def test_one_batch_matches_sklearn(backend):
    model = PCAStats().update(backend.asarray(DATA)).fit(K)
    assert_matches_reference(model)
    for name in ("components_", "mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_"):
        assert isinstance(getattr(model, name), np.ndarray) and getattr(model, name).dtype == np.float64


def test_shuffled_batches_merged_in_random_order_match_sklearn(backend):
    parts = [PCAStats().update(backend.asarray(b)) for b in batches(DATA, seed=1)]
    rng = np.random.default_rng(2)
    for _ in range(3):
        order = rng.permutation(len(parts))
        merged = functools.reduce(PCAStats.merge, [parts[i] for i in order])
        assert merged.n_samples == len(DATA)
        assert_matches_reference(merged.fit(K))


def test_sequential_updates_match_sklearn(backend):
    stats = PCAStats()
    for b in batches(DATA, seed=4):
        stats.update(backend.asarray(b))
    assert_matches_reference(stats.fit(K))


def test_float32_fast_path(backend):
    parts = [PCAStats().update(backend.asarray(b, "float32")) for b in batches(DATA, seed=5)]
    model = functools.reduce(PCAStats.merge, parts).fit(K)
    assert_matches_reference(model, cos_tol=1e-4, rtol=1e-4)
    assert model.components_.dtype == np.float64


def test_all_components_and_full_rank(backend):
    model = PCAStats().update(backend.asarray(DATA)).fit(D)
    ref = PCA(n_components=D, svd_solver="full").fit(DATA)
    assert_matches_reference(model, ref)
    assert model.noise_variance_ == 0.0
    np.testing.assert_allclose(model.explained_variance_ratio_.sum(), 1.0, rtol=1e-12)


def test_transform_equals_sklearn(backend):
    model = PCAStats().update(DATA).fit(K)
    # same sign rule as sklearn >= 1.5 (largest |loading| positive), so no flipping should be needed
    signs = np.sign(np.sum(model.components_ * REF.components_, axis=1))
    x = backend.asarray(DATA[:500])
    out = model.transform(x)
    assert backend.is_array(out) and backend.dtype_name(out) == "float64"
    np.testing.assert_allclose(backend.to_numpy(out) * signs, REF.transform(DATA[:500]), rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(signs, 1.0)
    back = backend.to_numpy(model.inverse_transform(out))
    np.testing.assert_allclose(back, REF.inverse_transform(REF.transform(DATA[:500])), rtol=1e-7, atol=1e-8)


def test_transform_keeps_float32(backend):
    model = PCAStats().update(DATA).fit(K)
    out = model.transform(backend.asarray(DATA[:300], "float32"))
    assert backend.dtype_name(out) == "float32"
    np.testing.assert_allclose(backend.to_numpy(out), REF.transform(DATA[:300]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_transform_by_component_is_the_transpose_of_transform(backend, dtype, rtol):
    """(k, n), each component's projections contiguous; the values of ``transform`` and of scikit-learn."""
    model = PCAStats().update(DATA).fit(K)
    x = backend.asarray(DATA[:400], dtype)
    rows, columns = backend.to_numpy(model.transform(x)), backend.to_numpy(model.transform_by_component(x))
    assert columns.shape == (K, 400) and columns.dtype == np.dtype(dtype)
    np.testing.assert_allclose(columns.T, rows, rtol=rtol, atol=rtol * np.abs(rows).max())
    np.testing.assert_allclose(columns.T, REF.transform(DATA[:400]), rtol=1e-4, atol=1e-4)


def test_numpy_in_numpy_out():
    model = PCAStats().update(DATA).fit(K)
    out = model.transform(DATA[:10])
    assert isinstance(out, np.ndarray) and out.shape == (10, K)


def test_signs_are_deterministic_across_batch_orders():
    models = []
    for seed in range(4):
        parts = [PCAStats().update(b) for b in batches(DATA, seed=seed)]
        models.append(functools.reduce(PCAStats.merge, parts[::-1] if seed % 2 else parts).fit(K))
    for model in models[1:]:
        np.testing.assert_allclose(model.components_, models[0].components_, atol=1e-9)
    components = models[0].components_
    biggest = components[np.arange(K), np.argmax(np.abs(components), axis=1)]
    assert (biggest > 0).all()
    # flipping the data's sign flips no component's sign rule
    flipped = PCAStats().update(-DATA).fit(K).components_
    assert (flipped[np.arange(K), np.argmax(np.abs(flipped), axis=1)] > 0).all()


@pytest.mark.parametrize("n, w, s", [(60, 5, 1), (61, 5, 3), (63, 5, 5), (40, 3, 7), (7, 5, 2), (5, 5, 1), (4, 5, 1)])
def test_update_windows_equals_update_of_the_window_matrix(backend, n, w, s):
    rng = np.random.default_rng(n + w + s)
    rows = rng.standard_normal((n, 3)) * [1.0, 3.0, 0.5] + [4.0, -2.0, 0.0]
    direct = PCAStats(3 * w).update(stride_windows(backend.asarray(rows), w, s, backend))
    fast = PCAStats(3 * w).update_windows(backend.asarray(rows), w, s)
    assert fast.n_samples == direct.n_samples
    np.testing.assert_allclose(fast.mean, direct.mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast.scatter, direct.scatter, rtol=1e-9, atol=1e-9)


def test_update_windows_float32_matches_sklearn_on_windows(backend):
    rng = np.random.default_rng(9)
    rows = np.cumsum(rng.standard_normal((4000, 4)), axis=0) * 0.05 + rng.standard_normal((4000, 4)) * [
        2.0,
        1.0,
        0.5,
        0.2,
    ]
    windows = stride_windows(rows, 5, 3, "numpy")
    ref = PCA(n_components=4, svd_solver="full").fit(windows)
    # two partitions: windows whose last row is before row 1500, then the rest (reading a 4-row tail,
    # starting on the global stride phase), merged: every window exactly once
    first = 1500 - 4 + (-(1500 - 4)) % 3
    parts = [
        PCAStats().update_windows(backend.asarray(rows[:1500], "float32"), 5, 3),
        PCAStats().update_windows(backend.asarray(rows[first:], "float32"), 5, 3),
    ]
    merged = parts[1].merge(parts[0])
    assert merged.n_samples == len(windows)
    assert_matches_reference(merged.fit(4), ref, cos_tol=1e-4, rtol=1e-4)
    whole = PCAStats().update_windows(backend.asarray(rows, "float32"), 5, 3).fit(4)
    assert_matches_reference(whole, ref, cos_tol=1e-4, rtol=1e-4)


def test_empty_batch_is_a_no_op_and_empty_stats_merge_as_identity(backend):
    stats = PCAStats().update(backend.asarray(DATA[:100]))
    before = stats.to_arrays()
    stats.update(backend.asarray(np.zeros((0, D))))
    for key, value in stats.to_arrays().items():
        np.testing.assert_array_equal(value, before[key])
    merged = PCAStats().merge(stats).merge(PCAStats())
    np.testing.assert_array_equal(merged.scatter, stats.scatter)
    assert merged.n_samples == 100


def test_nan_and_inf_are_reported_with_count_and_column(backend):
    bad = DATA[:50].copy()
    bad[3, 7] = np.nan
    bad[9, 7] = np.nan
    with pytest.raises(ValueError, match=r"2 NaN .*column.*7"):
        PCAStats().update(backend.asarray(bad))
    bad = DATA[:50].copy()
    bad[0, 2] = np.inf
    with pytest.raises(ValueError, match=r"1 infinite.*2"):
        PCAStats().update(backend.asarray(bad))
    with pytest.raises(ValueError, match="NaN"):
        PCAStats().update_windows(backend.asarray(np.full((10, 2), np.nan)), 3, 1)


def test_mismatched_feature_counts_raise():
    a = PCAStats().update(DATA[:20])
    b = PCAStats().update(DATA[:20, :5])
    with pytest.raises(ValueError, match=f"{D} features, got 5"):
        a.merge(b)
    with pytest.raises(ValueError, match="mismatch"):
        a.update(DATA[:20, :5])
    with pytest.raises(ValueError, match="expected 12 features, got 5"):
        a.fit(2).transform(DATA[:3, :5])


@pytest.mark.parametrize(
    "k, pattern", [(0, "n_components=0"), (D + 1, f"n_components={D + 1}.*= {D}"), (-1, "n_components=-1")]
)
def test_bad_n_components(k, pattern):
    with pytest.raises(ValueError, match=pattern):
        PCAStats().update(DATA).fit(k)
    with pytest.raises(TypeError, match="integer"):
        PCAStats().update(DATA).fit(2.0)


def test_n_components_limited_by_samples():
    with pytest.raises(ValueError, match=r"min\(4, 12\) = 4"):
        PCAStats().update(DATA[:4]).fit(5)
    assert PCAStats().update(DATA[:4]).fit(4).n_components_ == 4


def test_fewer_than_two_samples_cannot_fit():
    with pytest.raises(ValueError, match="at least 2 samples.*1"):
        PCAStats().update(DATA[:1]).fit(1)
    with pytest.raises(ValueError, match="at least 2 samples.*0"):
        PCAStats().fit(1)


def test_serialisation_round_trip_without_pickle():
    stats = PCAStats().update(DATA)
    buffer = io.BytesIO()
    np.savez(buffer, **stats.to_arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        restored = PCAStats.from_arrays(dict(loaded))
    assert restored.n_samples == stats.n_samples and restored.n_features == D
    np.testing.assert_array_equal(restored.scatter, stats.scatter)
    np.testing.assert_array_equal(restored.mean, stats.mean)

    model = stats.fit(K)
    buffer = io.BytesIO()
    np.savez(buffer, **model.to_arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        again = PCAModel.from_arrays(dict(loaded))
    for name in ("components_", "mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_"):
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name))
    assert (again.noise_variance_, again.n_samples_, again.n_components_) == (
        model.noise_variance_,
        model.n_samples_,
        K,
    )
    np.testing.assert_array_equal(again.transform(DATA[:5]), model.transform(DATA[:5]))

    empty = PCAStats.from_arrays(PCAStats().to_arrays())
    assert empty.n_samples == 0 and empty.n_features is None
    with pytest.raises(KeyError, match="scatter"):
        PCAStats.from_arrays({"n_samples": np.array(1), "mean": np.zeros(2)})


# several strides from one pass: PCAStats.from_stride_windows / project_stride_windows

from emberharmony_core.features import pca as pca_module  # noqa: E402
from emberharmony_core.features.pca import iter_project_stride_windows, project_stride_windows  # noqa: E402


def window_rows(n, features=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)) * np.geomspace(3.0, 0.5, features) + rng.uniform(-4, 4, features)


def direct_stats(rows, w, s, first_row=0):
    """The definition: update() on the stride_windows of the rows from the first one on the global stride phase."""
    offset = (-first_row) % s
    return PCAStats(w * rows.shape[1]).update(stride_windows(rows[offset:], w, s, "numpy"))


@pytest.mark.parametrize(
    "n, w, strides, first_row, block",
    [
        (60, 5, (1, 3, 5), 0, None),
        (61, 5, (1, 3, 5), 7, 7),  # several blocks, a global phase
        (63, 5, (2, 5, 7), 3, 4),  # no stride 1; stride > window (rows skipped between windows)
        (40, 3, (7,), 0, None),
        (1000, 4, (1, 2, 3, 5, 9), 13, 37),
        (7, 5, (1, 2), 0, None),  # a few windows
        (5, 5, (1, 3), 1, None),  # one stride-1 window; stride 3 on phase 1 has none
        (4, 5, (1, 3), 0, None),  # fewer rows than a window: empty statistics
    ],
)
def test_from_stride_windows_equals_update_of_each_stride(backend, n, w, strides, first_row, block):
    rows = window_rows(n, seed=n + w)
    got = PCAStats.from_stride_windows(backend.asarray(rows), w, strides, first_row=first_row, block_windows=block)
    assert sorted(got) == sorted(strides)
    for s in strides:
        want = direct_stats(rows, w, s, first_row)
        assert got[s].n_samples == want.n_samples and got[s].n_features == 3 * w
        np.testing.assert_allclose(got[s].mean, want.mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got[s].scatter, want.scatter, rtol=1e-9, atol=1e-9)


def test_from_stride_windows_partitions_merge_to_the_whole_table(backend):
    """Partitions read the previous partition's last w - 1 rows and pass their global first row: every
    window once, so the merged statistics are the whole table's, for every stride."""
    rows, w, strides = window_rows(997, seed=3), 5, (1, 3, 5)
    whole = PCAStats.from_stride_windows(backend.asarray(rows), w, strides)
    cuts = [0, 101, 102, 400, 731, 997]
    merged = {s: PCAStats() for s in strides}
    for start, stop in pairwise(cuts):
        first = max(0, start - (w - 1))
        part = PCAStats.from_stride_windows(backend.asarray(rows[first:stop]), w, strides, first_row=first)
        merged = {s: part[s].merge(merged[s]) for s in strides}
    for s in strides:
        assert merged[s].n_samples == whole[s].n_samples == (997 - w) // s + 1
        np.testing.assert_allclose(merged[s].mean, whole[s].mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(merged[s].scatter, whole[s].scatter, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype, cos_tol, rtol", [("float64", 1e-6, 1e-6), ("float32", 1e-4, 1e-4)])
def test_from_stride_windows_matches_sklearn(backend, dtype, cos_tol, rtol):
    rng = np.random.default_rng(9)
    rows = (
        np.cumsum(rng.standard_normal((6000, 4)), axis=0) * 0.05
        + rng.standard_normal((6000, 4)) * [2.0, 1.0, 0.5, 0.2]
        + [3.0, -1.0, 0.5, 8.0]
    )
    got = PCAStats.from_stride_windows(backend.asarray(rows, dtype), 5, (1, 3, 5), block_windows=500)
    for s in (1, 3, 5):
        ref = PCA(n_components=6, svd_solver="full").fit(stride_windows(rows, 5, s, "numpy"))
        assert_matches_reference(got[s].fit(6), ref, cos_tol=cos_tol, rtol=rtol)


def test_project_stride_windows_equals_transform_and_sklearn(backend):
    rows, w, strides = window_rows(2000, seed=5), 5, (1, 3, 5)
    stats = PCAStats.from_stride_windows(rows, w, strides)
    models = {s: stats[s].fit(4) for s in strides}
    got = project_stride_windows(backend.asarray(rows), w, models, block_windows=333)
    assert list(got) == list(strides)
    for s in strides:
        windows = stride_windows(rows, w, s, "numpy")
        assert backend.is_array(got[s]) and backend.dtype_name(got[s]) == "float64"
        np.testing.assert_allclose(backend.to_numpy(got[s]), models[s].transform(windows), rtol=1e-9, atol=1e-9)
        ref = PCA(n_components=4, svd_solver="full").fit(windows)  # same sign rule
        np.testing.assert_allclose(backend.to_numpy(got[s]), ref.transform(windows), rtol=1e-7, atol=1e-7)


def test_project_stride_windows_float32_phase_and_streamed_blocks(backend):
    rows, w = window_rows(1500, seed=6), 4
    first_row = 10  # stride 3 starts at local row 2, stride 4 at local row 2, stride 1 at 0
    stats = PCAStats.from_stride_windows(rows, w, (4, 1, 3), first_row=first_row)
    models = {s: stats[s].fit(3) for s in (4, 1, 3)}
    got = project_stride_windows(backend.asarray(rows, "float32"), w, models, first_row=first_row, block_windows=100)
    assert list(got) == [4, 1, 3]  # the models' order
    for s, model in models.items():
        want = model.transform(stride_windows(rows[(-first_row) % s :], w, s, "numpy"))
        assert backend.dtype_name(got[s]) == "float32"
        np.testing.assert_allclose(backend.to_numpy(got[s]), want, rtol=1e-4, atol=1e-4)
    seen = {s: 0 for s in models}
    for s, start, block in iter_project_stride_windows(
        backend.asarray(rows), w, models, first_row=first_row, block_windows=100
    ):
        assert start == seen[s]  # in order, each window once
        np.testing.assert_allclose(
            backend.to_numpy(block), backend.to_numpy(got[s])[start : start + block.shape[0]], rtol=1e-4, atol=1e-4
        )
        seen[s] += int(block.shape[0])
    assert seen == {s: int(got[s].shape[0]) for s in models}


def test_project_stride_windows_with_too_few_rows_gives_empty_arrays(backend):
    models = {s: part.fit(2) for s, part in PCAStats.from_stride_windows(window_rows(50), 5, (1, 2)).items()}
    got = project_stride_windows(backend.asarray(window_rows(4)), 5, models)
    assert {s: tuple(a.shape) for s, a in got.items()} == {1: (0, 2), 2: (0, 2)}
    assert list(iter_project_stride_windows(window_rows(4), 5, models)) == []


def test_update_over_several_blocks_matches_sklearn(backend, monkeypatch):
    monkeypatch.setattr(pca_module, "_BLOCK_BYTES", 4096)  # blocks of 256 rows
    monkeypatch.setattr(pca_module, "_FLUSH_BYTES", 3000)  # block products summed on the host every few blocks
    assert_matches_reference(PCAStats().update(backend.asarray(DATA)).fit(K))
    parts = PCAStats.from_stride_windows(backend.asarray(window_rows(3000)), 5, (1, 3))
    for s in (1, 3):
        want = direct_stats(window_rows(3000), 5, s)
        np.testing.assert_allclose(parts[s].scatter, want.scatter, rtol=1e-9, atol=1e-9)


def test_non_finite_rows_are_reported_with_count_and_column(backend):
    rows = window_rows(60, features=4)
    rows[10, 2] = np.nan
    rows[30, 2] = np.nan
    with pytest.raises(ValueError, match=r"from_stride_windows: input has 2 NaN .*column.*2"):
        PCAStats.from_stride_windows(backend.asarray(rows), 5, (1, 3))
    rows = window_rows(60, features=4)
    rows[59, 3] = -np.inf
    with pytest.raises(ValueError, match=r"0 NaN and 1 infinite.*column 3"):
        PCAStats.from_stride_windows(backend.asarray(rows, "float32"), 5, (1,))
    with pytest.raises(ValueError, match=r"1 infinite.*column 3"):
        PCAStats().update_windows(backend.asarray(rows), 5, 5)
    assert PCAStats().update_windows(backend.asarray(rows), 5, 2).n_samples == 28  # row 59 is in no stride-2 window
    # a row before the first window (global phase) is in no window: not an error
    rows = window_rows(60, features=4)
    rows[0, 1] = np.nan
    ok = PCAStats.from_stride_windows(backend.asarray(rows), 5, (3,), first_row=1)[3]
    assert ok.n_samples == (60 - 5 - 2) // 3 + 1 and np.isfinite(ok.scatter).all()  # windows start at local row 2


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_overflowing_float32_is_an_error_not_garbage(backend):
    rows = np.full((50, 2), 3e38, dtype=np.float32)
    rows[::2] = -3e38
    with pytest.raises(ValueError, match="overflow"):
        PCAStats().update(backend.asarray(rows))
    with pytest.raises(ValueError, match="overflow"):
        PCAStats.from_stride_windows(backend.asarray(rows), 2, (1,))


def test_bad_stride_window_arguments():
    rows = window_rows(30)
    with pytest.raises(ValueError, match="at least one stride"):
        PCAStats.from_stride_windows(rows, 5, [])
    with pytest.raises(ValueError, match="stride must be >= 1"):
        PCAStats.from_stride_windows(rows, 5, [1, 0])
    with pytest.raises(TypeError, match="window_size"):
        PCAStats.from_stride_windows(rows, 2.5, [1])
    with pytest.raises(ValueError, match="first_row"):
        PCAStats.from_stride_windows(rows, 5, [1], first_row=-1)
    assert sorted(PCAStats.from_stride_windows(rows, 5, 3)) == [3]  # one stride as an int
    models = {1: PCAStats.from_stride_windows(rows, 5, [1])[1].fit(2)}
    with pytest.raises(ValueError, match="expects 15 features, windows of 4 x 3 have 12"):
        project_stride_windows(rows, 4, models)
    with pytest.raises(TypeError, match="mapping"):
        project_stride_windows(rows, 5, [models[1]])
    with pytest.raises(ValueError, match="feature count mismatch"):
        PCAStats().update(rows[:, :2]).update_windows(rows, 5, 1)
