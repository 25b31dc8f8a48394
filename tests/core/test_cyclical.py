"""Cyclical calendar features: true periods (24 h, 7 d, days in the month, 12 months) on every backend."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from emberharmony_core.features import CYCLICAL_SUFFIXES, cyclical_features
from emberharmony_core.features import cyclical as cyclical_module
from emberharmony_core.features.cyclical import civil_from_days, cyclical_matrix
from emberharmony_core.ops import get_backend

SEED_NAMES = [
    "sin_hour",
    "cos_hour",
    "sin_dayofweek",
    "cos_dayofweek",
    "sin_day",
    "cos_day",
    "sin_month",
    "cos_month",
]
F32 = dict(rtol=0, atol=2e-7)  # a float64 value in [-1, 1] rounded to float32 is within 6e-8


# Temporary stand-in for the shared `backend` fixture of tests/conftest.py; a
# backend that is not installed fails here (get_backend raises), it never skips.
@pytest.fixture(params=["numpy", "torch", "mlx"])
def backend_obj(request):
    return get_backend(request.param)


def features(values, backend, dtype="float32") -> np.ndarray:
    """(n, 8) NumPy features of a list of timestamps / strings."""
    frame = pd.DataFrame({"ts": values})
    out = cyclical_features(frame, "ts", backend, dtype=dtype)
    return out[[f"ts_{s}" for s in SEED_NAMES]].to_numpy()


def reference(series: pd.Series) -> np.ndarray:
    """float64 reference from pandas' own calendar accessors and the true periods."""
    s = pd.Series(series)
    phases = [
        s.dt.hour / 24,
        s.dt.dayofweek / 7,
        (s.dt.day - 1) / s.dt.days_in_month,
        (s.dt.month - 1) / 12,
    ]
    return np.stack([f(2 * np.pi * p.to_numpy(dtype=np.float64)) for p in phases for f in (np.sin, np.cos)], axis=1)


def pair(phase: float) -> tuple[float, float]:
    return math.sin(2 * math.pi * phase), math.cos(2 * math.pi * phase)


def test_column_names_are_the_seeds():
    assert tuple(CYCLICAL_SUFFIXES) == tuple(SEED_NAMES)
    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-01"]), "x": [1]})
    out = cyclical_features(frame, "when", get_backend("numpy"))
    assert list(out.columns) == ["when", "x"] + [f"when_{s}" for s in SEED_NAMES]


def test_hand_computed_values(backend_obj):
    # 2024-03-15 18:00 is a Friday (weekday 4), March has 31 days, month index 2.
    # 2023-02-01 06:00 is a Wednesday (weekday 2), February 2023 has 28 days, month index 1.
    got = features(pd.to_datetime(["2024-03-15 18:45:59", "2023-02-01 06:00:00"]), backend_obj)
    want = np.array(
        [
            [*pair(18 / 24), *pair(4 / 7), *pair(14 / 31), *pair(2 / 12)],
            [*pair(6 / 24), *pair(2 / 7), *pair(0 / 28), *pair(1 / 12)],
        ]
    )
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, **F32)
    # the exact values of a few well-known angles
    np.testing.assert_allclose(got[0, :2], [-1.0, 0.0], **F32)  # 18 h: three quarters of the day
    np.testing.assert_allclose(got[1, :2], [1.0, 0.0], **F32)  # 6 h: a quarter


def test_true_periods_not_the_seeds(backend_obj):
    stamps = pd.to_datetime(
        [
            "2024-01-07 23:00",  # Sunday 23:00
            "2024-01-08 00:00",  # Monday 00:00 (next day)
            "2024-01-01 00:00",  # Monday, January
            "2024-12-02 00:00",  # Monday, December
        ]
    )
    got = features(stamps, backend_obj)
    hour, dow, month = slice(0, 2), slice(2, 4), slice(6, 8)
    assert not np.allclose(got[0, hour], got[1, hour], atol=1e-3), "hour 23 must differ from hour 0"
    np.testing.assert_allclose(got[0, hour], pair(23 / 24), **F32)
    assert not np.allclose(got[0, dow], got[1, dow], atol=1e-3), "Sunday must differ from Monday"
    np.testing.assert_allclose(got[0, dow], pair(6 / 7), **F32)
    assert not np.allclose(got[3, month], got[2, month], atol=1e-3), "December must differ from January"
    np.testing.assert_allclose(got[3, month], pair(11 / 12), **F32)
    # hour 24 is the next day's hour 0: the same point on the hour circle
    np.testing.assert_allclose(got[1, hour], got[2, hour], **F32)
    np.testing.assert_allclose(got[1, hour], [0.0, 1.0], **F32)


def test_day_of_month_uses_days_in_that_month(backend_obj):
    stamps = pd.to_datetime(["2023-02-15", "2023-03-15", "2024-02-29", "2023-04-30", "2023-01-31", "1900-02-28"])
    got = features(stamps, backend_obj)[:, 4:6]
    np.testing.assert_allclose(got[0], pair(14 / 28), **F32)  # Feb 2023: 28 days
    np.testing.assert_allclose(got[1], pair(14 / 31), **F32)  # Mar: 31 days
    assert not np.allclose(got[0], got[1], atol=1e-3)
    np.testing.assert_allclose(got[2], pair(28 / 29), **F32)  # leap February
    np.testing.assert_allclose(got[3], pair(29 / 30), **F32)  # last day of a 30-day month
    np.testing.assert_allclose(got[4], pair(30 / 31), **F32)
    np.testing.assert_allclose(got[5], pair(27 / 28), **F32)  # 1900 is not a leap year


def test_nat_gives_nan_rows(backend_obj):
    stamps = pd.to_datetime(["2024-05-05 05:00:00", None, "1969-12-31 23:59:59", None])
    got = features(stamps, backend_obj)
    assert np.isnan(got[[1, 3]]).all()
    assert np.isfinite(got[[0, 2]]).all()
    np.testing.assert_allclose(got[[0, 2]], reference(stamps[[0, 2]]), **F32)
    assert np.isnan(features(pd.to_datetime([None, None]), backend_obj)).all()


def test_tz_aware_uses_its_own_wall_clock(backend_obj):
    utc = pd.Series(pd.to_datetime(["2024-12-31 23:30", "2024-06-30 22:15"]).tz_localize("UTC"))
    tokyo = utc.dt.tz_convert("Asia/Tokyo")  # 2025-01-01 08:30 (a Wednesday, January); 2024-07-01 07:15
    got_utc, got_tokyo = features(utc, backend_obj), features(tokyo, backend_obj)
    np.testing.assert_allclose(got_utc[0], [*pair(23 / 24), *pair(1 / 7), *pair(30 / 31), *pair(11 / 12)], **F32)
    np.testing.assert_allclose(got_tokyo[0], [*pair(8 / 24), *pair(2 / 7), *pair(0 / 31), *pair(0 / 12)], **F32)
    np.testing.assert_allclose(got_tokyo, reference(tokyo), **F32)
    # a naive column is taken as is: same as the tz-aware one's wall clock
    np.testing.assert_allclose(features(tokyo.dt.tz_localize(None), backend_obj), got_tokyo, **F32)


def test_backends_match_float64_reference_on_random_timestamps(backend_obj):
    rng = np.random.default_rng(7)
    low, high = pd.Timestamp("1850-01-01").value, pd.Timestamp("2150-01-01").value
    stamps = pd.Series(pd.to_datetime(rng.integers(low, high, 10_000)))
    stamps[::997] = pd.NaT
    want = reference(stamps)
    for dtype in ("float32", "float64"):
        got = features(stamps, backend_obj, dtype=dtype)
        assert got.dtype == np.dtype(dtype)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, **(F32 if dtype == "float32" else dict(rtol=0, atol=1e-12)))


def test_dense_and_sparse_tables_agree(backend_obj, monkeypatch):
    rng = np.random.default_rng(3)
    # a month of data: the dense (one row per hour of the range) table
    start = pd.Timestamp("1960-02-01").value
    stamps = pd.Series(pd.to_datetime(start + rng.integers(0, 31 * 86400 * 10**9, 5_000)))
    stamps[10] = pd.NaT
    dense = backend_obj.to_numpy(cyclical_matrix(stamps, backend_obj))
    monkeypatch.setattr(cyclical_module, "_DENSE_MIN_ROWS", 0)
    monkeypatch.setattr(cyclical_module, "_DENSE_MAX_ROWS", 0)
    sparse = backend_obj.to_numpy(cyclical_matrix(stamps, backend_obj))
    np.testing.assert_array_equal(dense, sparse)
    np.testing.assert_allclose(dense, reference(stamps), **F32)


def test_cyclical_matrix_returns_backend_array(backend_obj):
    stamps = pd.date_range("2024-01-01", periods=50, freq="7h")
    matrix = cyclical_matrix(stamps, backend_obj, dtype="float64")
    assert backend_obj.is_array(matrix)
    assert tuple(matrix.shape) == (50, 8)
    assert backend_obj.dtype_name(matrix) == "float64"
    np.testing.assert_allclose(backend_obj.to_numpy(matrix), reference(pd.Series(stamps)), rtol=0, atol=1e-12)
    # NumPy datetime64 in other units, and a plain list of strings
    np.testing.assert_allclose(
        backend_obj.to_numpy(cyclical_matrix(stamps.to_numpy().astype("datetime64[s]"), backend_obj)),
        reference(pd.Series(stamps)),
        **F32,
    )
    np.testing.assert_allclose(
        backend_obj.to_numpy(cyclical_matrix(["2024-01-01 07:00", "2024-01-01 14:00"], backend_obj)),
        reference(pd.Series(stamps[1:3])),
        **F32,
    )


def test_empty_frame(backend_obj):
    empty = pd.DataFrame({"ts": pd.Series([], dtype="datetime64[ns]"), "x": pd.Series([], dtype=float)})
    out = cyclical_features(empty, "ts", backend_obj)
    assert len(out) == 0
    assert list(out.columns) == ["ts", "x"] + [f"ts_{s}" for s in SEED_NAMES]
    assert tuple(cyclical_matrix(empty["ts"], backend_obj).shape) == (0, 8)


def test_strings_are_parsed_and_the_input_is_not_mutated():
    backend = get_backend("numpy")
    frame = pd.DataFrame({"ts": ["2024-03-15 18:00:00", "2023-02-01 06:00:00"], "v": [1.0, 2.0]}, index=[10, 10])
    before = frame.copy()
    out = cyclical_features(frame, "ts", backend)
    pd.testing.assert_frame_equal(frame, before)
    assert list(out.index) == [10, 10]
    np.testing.assert_allclose(
        out[[f"ts_{s}" for s in SEED_NAMES]].to_numpy(), reference(pd.to_datetime(frame["ts"])), **F32
    )
    # running again on the output replaces the feature columns instead of duplicating them
    again = cyclical_features(out, "ts", backend, dtype="float64")
    assert list(again.columns) == list(out.columns)
    assert again["ts_sin_hour"].dtype == np.float64


def test_clear_errors():
    backend = get_backend("numpy")
    frame = pd.DataFrame({"ts": pd.to_datetime(["2024-01-01"]), "n": [3], "s": ["not a date"]})
    with pytest.raises(KeyError, match=r"'missing'.*available columns.*'ts'"):
        cyclical_features(frame, "missing", backend)
    with pytest.raises(TypeError, match=r"column 'n' has dtype int64"):
        cyclical_features(frame, "n", backend)
    with pytest.raises(ValueError, match=r"column 's' could not be parsed as datetimes"):
        cyclical_features(frame, "s", backend)
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        cyclical_features(frame, "ts", backend, dtype="float16")


def test_civil_from_days_matches_numpy_calendar():
    days = np.arange(-800_000, 800_000, 37, dtype=np.int64)  # ~ years -220 .. 4160
    year, month, day = civil_from_days(days)
    text = np.datetime_as_string(days.astype("datetime64[D]"))
    parsed = np.array([t.rsplit("-", 2) for t in text])
    np.testing.assert_array_equal(year, parsed[:, 0].astype(np.int64))
    np.testing.assert_array_equal(month, parsed[:, 1].astype(np.int64))
    np.testing.assert_array_equal(day, parsed[:, 2].astype(np.int64))
