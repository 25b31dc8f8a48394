"""Cyclical (sin/cos) calendar features of a datetime column, computed on a backend.

Each timestamp gets four phases in [0, 1), each divided by its TRUE period (the
seed divided by 23 / 6 / 30 / 11, which put hour 23 on hour 0, Sunday on Monday
and December on January):

=============  ===================================  ==========================
feature        phase                                 period
=============  ===================================  ==========================
``hour``       hour / 24 (integer hour, ``.dt.hour``)  24 hours
``dayofweek``  weekday / 7 (Monday = 0)                7 days
``day``        (day - 1) / days in that month          28, 29, 30 or 31 days
``month``      (month - 1) / 12 (January = 0)          12 months
=============  ===================================  ==========================

and the feature pair is ``sin(2 pi phase), cos(2 pi phase)``.

How it runs: the timestamps become whole hours since the epoch (one integer
division of the int64 wall-clock ticks, the edge conversion), and every feature
row is then one gather, on the backend, from a small table with one row per
hour of the data's range (24 rows for a day's partition): day-of-week,
day-of-month and month from Howard Hinnant's integer ``civil_from_days``, once
per calendar day, sin/cos in float64, rounded once to the output dtype. So no
sin/cos runs per row, the values are the float64 reference rounded to the
output dtype, and data crosses to the backend once (the row indices and the
table) and comes back once (``cyclical_features``) or not at all
(``cyclical_matrix``). Rows spread thinly over centuries use a table of the
distinct hours present instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..names import CYCLICAL_SUFFIXES, FLOAT_DTYPES

_DTYPES = FLOAT_DTYPES
_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_NAT = np.iinfo(np.int64).min
# The look-up table has one row per hour of the data's range when that range is
# short next to the number of rows (always, for a time partition), else one row
# per distinct hour present.
_DENSE_MIN_ROWS = 1 << 12
_DENSE_MAX_ROWS = 1 << 20
# pandas < 3 copies every column in concat unless told not to; pandas 3 (copy-on-write) never does
# and deprecates the keyword.
_NO_COPY = {"copy": False} if int(pd.__version__.split(".")[0]) < 3 else {}


def cyclical_features(df: pd.DataFrame, column: str, backend, dtype: str = "float32") -> pd.DataFrame:
    """Return ``df`` with 8 cyclical calendar features of ``df[column]`` added.

    Parameters
    ----------
    df : pandas.DataFrame
        Not modified. The result is a new frame holding ``df``'s columns (their
        data is shared, not copied, as with ``df.copy(deep=False)``) followed by
        ``{column}_sin_hour, _cos_hour, _sin_dayofweek, _cos_dayofweek, _sin_day,
        _cos_day, _sin_month, _cos_month`` (see ``CYCLICAL_SUFFIXES``); existing
        columns of those names are replaced.
    column : str
        A datetime64 column (naive or tz-aware), or strings / Python datetimes
        that ``pandas.to_datetime`` parses. Other dtypes raise ``TypeError``.
    backend
        An ``emberharmony_core.ops`` backend; the arithmetic runs there.
    dtype : {"float32", "float64"}
        dtype of the feature columns. Values equal the float64 reference
        rounded to this dtype.

    Time zones: a tz-aware column is read on the wall clock of its own time
    zone (``ts.hour`` of each ``pandas.Timestamp``): call
    ``df[column].dt.tz_convert("Europe/Paris")`` first to get Paris local time.
    A naive column is taken as it is. Missing timestamps (NaT) give NaN features.
    """
    if column not in df.columns:
        raise KeyError(f"column {column!r} not in the frame; available columns: {list(df.columns)}")
    series = df[column]
    if isinstance(series, pd.DataFrame):
        raise ValueError(f"column name {column!r} is not unique in the frame")
    matrix = backend.to_numpy(cyclical_matrix(series, backend, dtype=dtype, name=column))
    if not matrix.flags.writeable:
        matrix = matrix.copy()
    names = [f"{column}_{suffix}" for suffix in CYCLICAL_SUFFIXES]
    features = pd.DataFrame(matrix, index=df.index, columns=names, copy=False)
    stale = [name for name in names if name in df.columns]
    base = df.drop(columns=stale) if stale else df
    # copy=False: one (n, 8) block added, the input's columns shared rather than copied.
    return pd.concat([base, features], axis=1, **_NO_COPY)


def cyclical_matrix(timestamps, backend, dtype: str = "float32", *, name: str = "timestamps"):
    """The ``(n, 8)`` feature matrix as a backend array, columns in ``CYCLICAL_SUFFIXES`` order.

    ``timestamps`` is a pandas Series / DatetimeIndex, a NumPy datetime64 array,
    or a sequence pandas parses as datetimes; the rules of ``cyclical_features``
    apply (tz-aware: own wall clock; NaT: a NaN row). ``name`` labels errors.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    ticks, per_day = _wall_clock_ticks(timestamps, name)
    if ticks.shape[0] == 0:
        return backend.zeros((0, len(CYCLICAL_SUFFIXES)), dtype=dtype)
    # Edge conversion: wall-clock ticks -> whole hours since the epoch (floor, so
    # pre-1970 works). Everything after is a look-up in a per-hour table.
    hours = np.floor_divide(ticks, per_day // 24)
    nat = ticks == _NAT if ticks.min() == _NAT else None
    valid = hours if nat is None else hours[~nat]
    if valid.size == 0:
        rows, table = np.zeros(hours.shape, dtype=np.int64), _table_for_hours(valid)
    else:
        first, last = int(valid.min()), int(valid.max())
        if last - first < max(_DENSE_MIN_ROWS, min(hours.shape[0], _DENSE_MAX_ROWS)):
            table = _table_for_hour_range(first, last - first + 1)
            rows = hours
            rows -= first
        else:  # few rows spread over centuries: one table row per distinct hour
            if nat is not None:
                hours[nat] = first
            distinct, rows = np.unique(hours, return_inverse=True)
            table = _table_for_hours(distinct)
    if nat is not None:
        rows[nat] = table.shape[0] - 1  # the NaN row
    return backend.take(backend.asarray(table, dtype=dtype), backend.asarray(rows.reshape(-1)), axis=0)


def _wall_clock_ticks(timestamps, name: str) -> tuple[np.ndarray, int]:
    """int64 wall-clock ticks since 1970-01-01 (NaT = int64 min) and ticks per day."""
    if isinstance(timestamps, (pd.Series, pd.Index)):
        values = timestamps
    else:
        array = np.asarray(timestamps)
        values = pd.Series(array if array.ndim == 1 else array.reshape(-1))
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        if not (pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)):
            raise TypeError(
                f"column {name!r} has dtype {values.dtype}; cyclical features need datetimes "
                f"(datetime64, or strings / datetime objects that pandas.to_datetime parses)"
            )
        try:
            values = pd.to_datetime(values)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"column {name!r} could not be parsed as datetimes: {exc}") from exc
        if not pd.api.types.is_datetime64_any_dtype(values.dtype):
            raise ValueError(
                f"column {name!r} parsed to dtype {values.dtype}, not datetime64 "
                f"(mixed time zones? convert with pandas.to_datetime(..., utc=True) first)"
            )
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_localize(None) if isinstance(values, pd.Series) else values.tz_localize(None)
    array = np.asarray(values)
    unit, count = np.datetime_data(array.dtype)
    if unit not in _TICKS_PER_SECOND or count != 1:  # days, weeks, ...: seconds hold them exactly
        array = array.astype("datetime64[s]")
        unit = "s"
    return array.view(np.int64), 86400 * _TICKS_PER_SECOND[unit]


def civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month 1..12, day 1..31) of int64 days since 1970-01-01, proleptic Gregorian.

    Howard Hinnant's ``civil_from_days`` (pure integer arithmetic, any sign).
    """
    z = np.asarray(days, dtype=np.int64) + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _day_columns(days: np.ndarray) -> np.ndarray:
    """(len(days), 6) float64: sin/cos of the dayofweek, day-of-month and month phases of each day."""
    year, month, day = civil_from_days(days)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days_in_month = _DAYS_IN_MONTH[month - 1] + ((month == 2) & leap)
    weekday = np.remainder(days + 3, 7)  # 1970-01-01 was a Thursday; Monday = 0
    phases = np.stack([weekday / 7.0, (day - 1) / days_in_month, (month - 1) / 12.0], axis=1) * (2.0 * np.pi)
    columns = np.empty((days.shape[0], 6))
    columns[:, 0::2] = np.sin(phases)
    columns[:, 1::2] = np.cos(phases)
    return columns


def _hour_columns(hour_of_day: np.ndarray) -> np.ndarray:
    """(len(hour_of_day), 2) float64: sin/cos of hour / 24."""
    phase = hour_of_day * (2.0 * np.pi / 24.0)
    return np.stack([np.sin(phase), np.cos(phase)], axis=1)


def _table_for_hours(hours: np.ndarray) -> np.ndarray:
    """(len(hours) + 1, 8) float64 feature rows for hours since the epoch, then a NaN row."""
    days = np.floor_divide(hours, 24)
    table = np.full((hours.shape[0] + 1, 8), np.nan)
    table[:-1, :2] = _hour_columns(hours - 24 * days)
    table[:-1, 2:] = _day_columns(days)
    return table


def _table_for_hour_range(first: int, count: int) -> np.ndarray:
    """``_table_for_hours(np.arange(first, first + count))``, with the day columns computed once per day."""
    first_day = first // 24
    days = np.arange(first_day, (first + count - 1) // 24 + 1, dtype=np.int64)
    grid = np.empty((days.shape[0], 24, 8))
    grid[:, :, :2] = _hour_columns(np.arange(24))[None, :, :]
    grid[:, :, 2:] = _day_columns(days)[:, None, :]
    table = np.full((count + 1, 8), np.nan)
    offset = first - 24 * first_day
    table[:-1] = grid.reshape(-1, 8)[offset : offset + count]
    return table


__all__ = ["cyclical_features", "cyclical_matrix", "CYCLICAL_SUFFIXES", "civil_from_days"]
