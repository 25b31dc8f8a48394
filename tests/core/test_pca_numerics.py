"""PCA numerics on rank-deficient windows: numerical rank, clipped eigenvalues and the explained-variance check.

Real windows are rank-deficient: sin/cos columns of consecutive hours are rotations of each other, columns
are duplicated or collinear. The fit, the rank and the ``explained_variance_sane`` check must hold there
(compared with scikit-learn's full-SVD PCA / NumPy float64 on the very same windows), and the check must
still fail on truly bad ratios. On real data (vega_datasets' NOAA series, few features per row), float32 windows
must keep the explained-variance ratio of every component above a small share of the variance to a relative
error set by the input's own rounding to float32, against scikit-learn's PCA of the float64 windows.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA

from emberharmony_assets.checks import EXPLAINED_VARIANCE, explained_variance_check
from emberharmony_core.features import PCAStats, cyclical_features, stride_windows
from emberharmony_core.features.pca import numerical_rank, rank_tolerance
from emberharmony_core.ops import get_backend

W = 5
NUMPY = get_backend("numpy")


def hourly_series(hours=24 * 30, numeric=4, seed=0, start_hour=0, calendar=False):
    """One entity's hourly rows: ``numeric`` standardised, correlated noisy signals, then sin/cos of the hour
    of day (period 24), and with ``calendar`` sin/cos of the weekday, float64 (n, numeric + 2 [+ 2])."""
    rng = np.random.default_rng(seed)
    t = np.arange(start_hour, start_hour + hours)
    hour, weekday = t % 24, (t // 24) % 7
    common = rng.standard_normal(hours)
    signals = [
        np.sin(2 * np.pi * hour / 24) * (1 + k)
        + 0.6 * common * (1 + k % 2)
        + 0.3 * k * t / hours
        + rng.normal(scale=0.4, size=hours)
        for k in range(numeric)
    ]
    x = np.column_stack(signals)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    columns = [x, np.sin(2 * np.pi * hour / 24)[:, None], np.cos(2 * np.pi * hour / 24)[:, None]]
    if calendar:
        columns += [np.sin(2 * np.pi * weekday / 7)[:, None], np.cos(2 * np.pi * weekday / 7)[:, None]]
    return np.column_stack(columns)


def windows_and_stats(series_list, dtype, stride=1):
    """The float64 copy of the (dtype) windows of each series, concatenated, and their merged PCAStats."""
    rows = [s.astype(dtype) for s in series_list]
    stats = functools.reduce(PCAStats.merge, [PCAStats.from_stride_windows(r, W, [stride])[stride] for r in rows])
    X = np.concatenate([np.asarray(stride_windows(r, W, stride, NUMPY), dtype=np.float64) for r in rows])
    return X, stats


def max_angle_deg(a, b):
    return float(np.degrees(subspace_angles(a.T, b.T).max()))


# numerical rank


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sin_cos_of_consecutive_hours_span_two_dimensions_of_a_window(dtype):
    # every hour column in a window is a rotation of the first row's (sin h, cos h): 2 dimensions, not 2 W
    numeric = 3
    X, stats = windows_and_stats([hourly_series(numeric=numeric, seed=e, start_hour=7 * e) for e in range(3)], dtype)
    expected = W * numeric + 2
    assert stats.n_features == W * (numeric + 2)
    assert stats.numerical_rank(dtype) == expected
    centred = X - X.mean(axis=0)
    # the same rule on singular values (NumPy, float64 windows): sigma_i^2 > tol * sigma_max^2
    sigma = np.linalg.svd(centred, compute_uv=False)
    assert int(np.sum(sigma**2 > rank_tolerance(dtype, X.shape[1]) * sigma[0] ** 2)) == expected
    if dtype == "float64":
        assert np.linalg.matrix_rank(centred) == expected  # NumPy's own float64 rule agrees


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_duplicated_and_collinear_columns(dtype):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2000, 2)) * [3.0, 0.5] + [10.0, -2.0]
    rows = np.column_stack([base[:, 0], base[:, 1], base[:, 0], 2 * base[:, 0] - 0.5 * base[:, 1]])  # rank 2 of 4
    X, stats = windows_and_stats([rows], dtype)
    rank = W * 2
    assert stats.numerical_rank(dtype) == rank
    assert stats.numerical_rank(dtype) == numerical_rank(np.linalg.eigvalsh(np.cov(X.T)), X.shape[1], dtype)

    model = stats.fit(X.shape[1])  # all 20 components, 10 beyond the rank
    ref = PCA(svd_solver="full").fit(X)
    assert np.all(model.explained_variance_ >= 0) and np.all(np.isfinite(model.singular_values_))
    angle_tol, ratio_tol = (0.01, 1e-6) if dtype == "float32" else (1e-8, 1e-12)
    assert max_angle_deg(model.components_[:rank], ref.components_[:rank]) < angle_tol
    np.testing.assert_allclose(model.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=0, atol=ratio_tol)
    assert abs(model.explained_variance_ratio_.sum() - 1) <= rank_tolerance(dtype, X.shape[1])
    result = explained_variance_check({1: model.explained_variance_ratio_}, dtype, n_features_by_stride={1: X.shape[1]})
    assert result.passed, result.metadata["problems"]
    assert result.metadata["numerical_rank_stride_1"].value == rank
    assert result.metadata["components_beyond_rank_stride_1"].value == X.shape[1] - rank


def test_numerical_rank_of_empty_and_constant_statistics_is_zero():
    assert PCAStats().numerical_rank() == 0
    assert PCAStats().update(np.full((10, 3), 4.0)).numerical_rank("float64") == 0
    assert PCAStats().update(np.eye(3)).numerical_rank("float64") == 2  # 3 points span a plane
    with pytest.raises(ValueError, match="dtype"):
        rank_tolerance("float16", 3)


def test_fit_clips_negative_eigenvalues_of_the_scatter():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    scatter = q @ np.diag([50.0, 10.0, -1e-9]) @ q.T  # what rounding leaves of a rank-2 scatter
    stats = PCAStats.from_arrays({"n_samples": np.array(11), "mean": np.zeros(3), "scatter": scatter})
    model = stats.fit(3)
    assert model.explained_variance_[-1] == 0.0 and model.singular_values_[-1] == 0.0
    np.testing.assert_allclose(model.explained_variance_[:2], [5.0, 1.0], rtol=1e-12)
    assert np.all(stats.eigenvalues() >= 0) and stats.eigenvalues()[0] == pytest.approx(50.0)
    assert stats.numerical_rank("float64") == 2


# realistic float32 windows against scikit-learn's full PCA on the same windows in float64


@pytest.mark.parametrize("stride", [1, 3])
def test_float32_hourly_windows_match_sklearn_full_pca(stride):
    series = [hourly_series(hours=24 * 40, numeric=8, seed=e, start_hour=5 * e, calendar=True) for e in range(6)]
    X, stats = windows_and_stats(series, "float32", stride)
    n, d = X.shape
    eps64 = float(np.finfo(np.float64).eps)
    ref = PCA(svd_solver="full").fit(X)
    rank = stats.numerical_rank("float32")
    assert rank < d  # rank-deficient, as real windows with hour columns are

    # X holds the float32 windows' values exactly, and their products and sums are float64: the scatter is
    # exact to float64 rounding
    centred = X - X.mean(axis=0)
    exact = centred.T @ centred
    error = np.linalg.norm(stats.scatter - exact, 2)
    assert error < 10 * eps64 * np.linalg.norm(exact, 2)

    model = stats.fit(d)  # every component, so n_components is above the numerical rank
    # each ratio is off by at most error / trace (Weyl), plus the eigensolvers' own rounding
    np.testing.assert_allclose(model.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=0, atol=d * eps64)
    kept = ref.explained_variance_ratio_ > 1e-6
    relative = (
        np.abs(model.explained_variance_ratio_ - ref.explained_variance_ratio_)[kept]
        / ref.explained_variance_ratio_[kept]
    )
    assert relative.max() < 1e-10
    # each leading subspace turns by at most (error + the solvers' backward error d eps64 |S|) / eigengap
    # (Davis-Kahan; x2 for the perturbed gap)
    eig = np.linalg.eigvalsh(exact)[::-1]
    perturbation = error + d * eps64 * np.linalg.norm(exact, 2)
    for k in (1, 2, 4, 8, 16, 30):
        sin_angle = np.sin(subspace_angles(model.components_[:k].T, ref.components_[:k].T).max())
        assert sin_angle <= 2 * perturbation / (eig[k - 1] - eig[k]), k
    assert max_angle_deg(model.components_[:8], ref.components_[:8]) < 1e-9  # well separated: tiny in degrees

    result = explained_variance_check(
        {stride: model.explained_variance_ratio_},
        "float32",
        n_features_by_stride={stride: d},
        ranks_by_stride={stride: rank},
    )
    assert result.passed, result.metadata["problems"]
    assert result.check_name == EXPLAINED_VARIANCE
    assert result.metadata[f"numerical_rank_stride_{stride}"].value == rank


def test_float64_windows_match_numpy_float64_to_rounding():
    series = [hourly_series(hours=24 * 20, numeric=6, seed=e, calendar=True) for e in range(3)]
    X, stats = windows_and_stats(series, "float64")
    eig = np.linalg.eigvalsh(np.cov(X.T))[::-1]
    model = stats.fit(X.shape[1])
    np.testing.assert_allclose(model.explained_variance_, np.clip(eig, 0, None), rtol=0, atol=1e-12 * eig[0])
    np.testing.assert_allclose(model.explained_variance_ratio_, eig / eig.sum(), rtol=0, atol=1e-13)
    assert stats.numerical_rank("float64") == np.linalg.matrix_rank(X - X.mean(axis=0))


# real data: vega_datasets' NOAA hourly temperatures of Seattle and San Francisco (2010) and Seattle's daily
# weather (2012-2015), 5 to 13 columns a row, windows of 5; float32 windows against scikit-learn's full PCA of
# the float64 windows

REAL_SHARE = 1e-6  # every component explaining more than this share of the variance ...
REAL_RTOL = 2e-6  # ... has its explained-variance ratio within this relative error (the bound docs/pca.md states)
REAL_DATA = ("seattle_hourly_raw_5", "two_cities_hourly_10", "seattle_daily_10", "seattle_daily_raw_13")


def calendar_columns(dates, periods):
    """sin/cos columns (the package's own cyclical features, float64) of ``dates`` for each period named."""
    frame = cyclical_features(pd.DataFrame({"t": dates}), "t", NUMPY, dtype="float64")
    return frame[[f"t_{f}_{p}" for p in periods for f in ("sin", "cos")]].to_numpy(np.float64)


@functools.cache
def real_rows(name):
    """(n, F) float64 rows of one real series: raw readings (degrees F, mm, m/s) or standardised ones, then
    calendar columns (for daily rows the hour columns are constant)."""
    local_data = pytest.importorskip("vega_datasets").local_data
    every = ["hour", "dayofweek", "day", "month"]
    if name.startswith("seattle_daily"):
        weather = local_data.seattle_weather()
        measured = weather[["precipitation", "temp_max", "temp_min", "wind"]].to_numpy(np.float64)
        if name == "seattle_daily_10":
            z = (measured - measured.mean(axis=0)) / measured.std(axis=0)
            return np.column_stack([z, calendar_columns(weather["date"], every[1:])])
        return np.column_stack([measured, measured[:, 1] - measured[:, 2], calendar_columns(weather["date"], every)])
    seattle, sf = local_data.seattle_temps(), local_data.sf_temps()
    assert (seattle["date"].to_numpy() == sf["date"].to_numpy()).all()
    if name == "seattle_hourly_raw_5":
        return np.column_stack([seattle["temp"], calendar_columns(seattle["date"], every[:2])])
    temps = np.column_stack([seattle["temp"], sf["temp"]])
    return np.column_stack([(temps - temps.mean(axis=0)) / temps.std(axis=0), calendar_columns(seattle["date"], every)])


def relative_errors(ratios, reference, kept):
    return np.abs(ratios - reference)[kept] / reference[kept]


@pytest.mark.parametrize("name", REAL_DATA)
def test_float32_windows_of_real_data_keep_every_resolved_ratio_to_a_relative_bound(name):
    rows = real_rows(name)
    assert 5 <= rows.shape[1] <= 13
    # the package's path: float32 windows gathered 4,096 at a time, each block through update, blocks merged
    stats = PCAStats.from_stride_windows(rows.astype(np.float32), W, (1, 3, 5), block_windows=4096)
    for stride in (1, 3, 5):
        v = sliding_window_view(rows, W, axis=0)[::stride]  # (m, F, W): NumPy's windows, not the package's
        X = v.transpose(0, 2, 1).reshape(len(v), -1)  # each window's rows concatenated in time order
        assert stats[stride].n_samples == len(X)
        np.testing.assert_allclose(stats[stride].mean, X.mean(axis=0), rtol=1e-6, atol=1e-6)
        ratios = stats[stride].fit(min(X.shape)).explained_variance_ratio_
        reference = PCA(svd_solver="full").fit(X).explained_variance_ratio_
        kept = reference > REAL_SHARE
        assert kept.sum() >= 10, kept.sum()
        error = relative_errors(ratios, reference, kept).max()
        assert error <= REAL_RTOL, (stride, error)
        # what is left is the rounding of the windows to float32: float64 PCA of the float32 values is as far off,
        # and the statistics match it to float64 rounding
        rounded = PCA(svd_solver="full").fit(X.astype(np.float32).astype(np.float64)).explained_variance_ratio_
        own = relative_errors(ratios, rounded, kept).max()
        assert own <= 1e-9, (stride, own)


# the check itself


def test_the_issue_sum_of_1_00000008_passes_in_float32_but_not_in_float64():
    ratios = np.concatenate([np.full(10, 0.1), np.full(70, 8e-8 / 70)])  # sums to 1.00000008, 80 window features
    assert ratios.sum() > 1 + 7e-8
    loose = explained_variance_check({1: ratios}, "float32", n_features_by_stride={1: 80})
    assert loose.passed, loose.metadata["problems"]
    assert loose.metadata["numerical_rank_stride_1"].value == 10
    strict = explained_variance_check({1: ratios}, "float64", n_features_by_stride={1: 80})
    assert not strict.passed and "sum to 1.00000008" in strict.metadata["problems"].value


def test_default_arguments_still_work_and_tolerate_float32_rounding():
    ratios = np.array([0.6, 0.3, 0.1 + 2e-7, -3e-7])  # 4 ratios: tolerance 4 * eps32 = 4.8e-7
    result = explained_variance_check({1: ratios, 3: np.array([0.7, 0.2])})
    assert result.passed, result.metadata["problems"]
    assert result.metadata["numerical_rank_stride_1"].value == 3
    assert result.metadata["dtype"].value == "float32"


@pytest.mark.parametrize(
    "ratios, message",
    [
        (np.array([0.5, np.nan, 0.1]), "non-finite"),
        (np.array([0.5, np.inf]), "non-finite"),
        (np.array([0.6, 0.3, -1e-3]), "outside [0, 1]"),
        (np.array([0.6, 0.3, 0.11]), "sum to 1.01"),
        (np.array([1.2]), "outside [0, 1]"),
        (np.array([0.3, 0.5, 0.1]), "not in decreasing order (component 2"),
        (np.array([0.0, 0.0]), "first component explains nothing"),
        (np.array([]), "no explained-variance ratios"),
    ],
)
def test_truly_bad_ratios_fail(ratios, message):
    result = explained_variance_check({1: np.array([0.5, 0.3]), 5: ratios}, "float32", n_features_by_stride={5: 80})
    assert not result.passed
    problems = result.metadata["problems"].value
    assert message in problems and problems.startswith("stride 5:"), problems


def test_tolerance_scales_with_the_dtype_and_the_window_width():
    ratios = np.array([0.7, 0.3 + 5e-6])  # 5e-6 over: 42 float32 epsilons
    assert not explained_variance_check({1: ratios}, "float32").passed  # d = 2 ratios: tolerance 2.4e-7
    assert explained_variance_check({1: ratios}, "float32", n_features_by_stride={1: 80}).passed  # 9.5e-6
    assert not explained_variance_check({1: ratios}, "float64", n_features_by_stride={1: 80}).passed
