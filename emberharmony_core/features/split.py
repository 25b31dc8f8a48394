"""Deterministic train / validation / test split from a hash of the row key.

The split is BigQuery's own idiom, reproduced bit for bit in Python::

    bucket = MOD(ABS(FARM_FINGERPRINT(CAST(key AS STRING))), 100)
    split  = CASE WHEN bucket < 80 THEN 'train' WHEN bucket < 90 THEN 'validation' ELSE 'test' END

so a key gets the same split on every engine, every rerun and every partition
(``split_sql_expression`` writes that SQL for pushdown with the same thresholds).

``FARM_FINGERPRINT`` is FarmHash ``Fingerprint64`` of the string's UTF-8 bytes
(``farmhash.fingerprint64`` from pyfarmhash), which returns it as an unsigned
64-bit integer; BigQuery returns the same 64 bits as a signed INT64, so values
>= 2**63 are read as ``value - 2**64``. ``ABS`` of that is ``2**64 - value``.

``CAST(key AS STRING)`` for the key types supported here (BigQuery's rules):

==================================================  ==========================================
key                                                 string
==================================================  ==========================================
integers (NumPy, Python, pandas ``Int64``)          decimal text: ``-12``
strings                                             as is (hashed as UTF-8)
bytes                                               the bytes as is (``FARM_FINGERPRINT(bytes)``)
bools                                               ``true`` / ``false``
dates (``datetime.date``, ``datetime64[D]``)        ``YYYY-MM-DD``
naive datetimes (DATETIME)                          ``YYYY-MM-DD HH:MM:SS[.fff|.ffffff]``
tz-aware datetimes (TIMESTAMP)                      the same in UTC, then ``+00``
==================================================  ==========================================

Sub-second digits follow BigQuery: none when the microseconds are zero, three
when they are whole milliseconds, else six (nanoseconds are truncated to
microseconds, BigQuery's precision); the UTC offset is written ``+00`` (these
rules are ZetaSQL's ``ConvertTimestampMicrosToStringWithTruncation`` and
``ConvertDatetimeToString``, the code behind BigQuery's CAST). Floats are refused: BigQuery's float
formatting is not reproduced (an integer key column with nulls that pandas made
float should be cast to ``"Int64"``). NULL keys (None, NaN, NaT, ``pd.NA``) get
bucket ``-1`` from ``split_bucket`` and the split ``"test"``, as in BigQuery,
where ``NULL < 80`` is not true and the ``CASE`` falls through to ``ELSE``.

``ABS(-2**63)`` is an overflow error in BigQuery; a key whose fingerprint is
exactly ``-2**63`` (none is known; the chance is 2**-64 per key) raises
``OverflowError`` here too.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..names import DEFAULT_FRACTIONS, SPLIT_NAMES

_SUM_TOLERANCE = 1e-9
_PERCENT_TOLERANCE = 1e-6
_INT64_MIN_BITS = 1 << 63


def _fingerprint64():
    try:
        from farmhash import fingerprint64
    except ImportError as exc:  # pragma: no cover - pyfarmhash is a core dependency
        raise ImportError("split needs pyfarmhash (`pip install pyfarmhash`) for FarmHash Fingerprint64") from exc
    return fingerprint64


def farm_fingerprint(values) -> np.ndarray:
    """BigQuery ``FARM_FINGERPRINT`` (signed INT64) of each str (hashed as UTF-8) or bytes value, as int64."""
    values = list(values)
    return np.fromiter(map(_fingerprint64(), values), dtype=np.uint64, count=len(values)).view(np.int64)


def split_bucket(keys) -> np.ndarray:
    """``MOD(ABS(FARM_FINGERPRINT(CAST(key AS STRING))), 100)`` per key: int64 array in 0..99.

    ``keys``: a pandas Series / Index, NumPy array or sequence of one supported
    key type (see the module docstring). NULL keys give ``-1``. Each distinct key
    is hashed once, so repeated entity keys cost a hash-table look-up, not a hash.
    """
    codes, distinct_buckets = _distinct_buckets(keys)
    return np.append(distinct_buckets, -1)[codes]  # code -1 (NULL) reads the appended -1


def assign_split(keys, fractions=DEFAULT_FRACTIONS) -> np.ndarray:
    """ "train" / "validation" / "test" per key (object array of str), as BigQuery's CASE would assign.

    With ``fractions=(f_train, f_validation, f_test)`` in whole percent, a key is
    train when its bucket < 100 f_train, validation when < 100 (f_train +
    f_validation), test otherwise (NULL keys: test). See ``split_bucket``.
    """
    train_below, validation_below = split_thresholds(fractions)
    codes, distinct_buckets = _distinct_buckets(keys)
    which = (distinct_buckets >= train_below).astype(np.int8) + (distinct_buckets >= validation_below)
    names = np.array(SPLIT_NAMES, dtype=object)
    return names[np.append(which, 2)][codes]  # NULL keys: 'test'


def validate_fractions(fractions) -> tuple[float, float, float]:
    """Check (train, validation, test) fractions and return them as floats.

    Raises ``ValueError`` (naming the offending value) unless there are exactly
    three finite numbers, none negative, each a whole percent (buckets are
    percent), summing to 1 within 1e-9.
    """
    try:
        values = tuple(fractions)
    except TypeError:
        raise ValueError(f"fractions must be 3 numbers (train, validation, test), got {fractions!r}") from None
    if len(values) != 3:
        raise ValueError(f"fractions must be 3 numbers (train, validation, test), got {len(values)}: {fractions!r}")
    checked: list[float] = []
    for split, value in zip(SPLIT_NAMES, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{split} fraction must be a finite number, got {value!r}")
        if value < 0:
            raise ValueError(f"{split} fraction must not be negative, got {value!r}")
        # typeshed types numbers.Real arithmetic as complex-like (no __round__), though a Real times 100 is real
        if abs(100 * value - round(100 * value)) > _PERCENT_TOLERANCE:  # type: ignore[call-overload]
            raise ValueError(
                f"{split} fraction {value!r} is not a whole percent; buckets are MOD(..., 100), "
                f"so fractions must be multiples of 0.01"
            )
        checked.append(float(value))
    total = math.fsum(checked)
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {total!r})")
    train, validation, test = checked
    return train, validation, test


def split_thresholds(fractions=DEFAULT_FRACTIONS) -> tuple[int, int]:
    """Bucket thresholds (train below, validation below): ``round(100 * cumsum(fractions))[:2]``."""
    train, validation, _ = validate_fractions(fractions)
    train_below = round(100 * train)
    return train_below, train_below + round(100 * validation)


def split_sql_expression(key_sql: str, fractions=DEFAULT_FRACTIONS) -> str:
    """BigQuery ``CASE`` expression giving the split of ``key_sql`` with the same thresholds.

    ``key_sql`` is inserted verbatim: pass an already-quoted identifier or
    expression (e.g. ```user_id```). Matches ``assign_split`` for the key types
    in the module docstring (BigQuery's CAST renders TIMESTAMP in UTC, its
    default time zone).
    """
    if not isinstance(key_sql, str) or not key_sql.strip():
        raise ValueError(f"key_sql must be a non-empty SQL expression, got {key_sql!r}")
    train_below, validation_below = split_thresholds(fractions)
    bucket = f"MOD(ABS(FARM_FINGERPRINT(CAST({key_sql} AS STRING))), 100)"
    return (
        f"CASE WHEN {bucket} < {train_below} THEN 'train' "
        f"WHEN {bucket} < {validation_below} THEN 'validation' ELSE 'test' END"
    )


# ---------------------------------------------------------------------------
# internals


def _distinct_buckets(keys) -> tuple[np.ndarray, np.ndarray]:
    """(codes into the distinct keys, -1 for NULL; bucket of each distinct key)."""
    codes, uniques = _factorize(keys)
    return codes, _buckets_of_strings(_cast_to_string(uniques))


def _buckets_of_strings(strings: list) -> np.ndarray:
    """MOD(ABS(signed fingerprint), 100) for each str / bytes."""
    unsigned = np.fromiter(map(_fingerprint64(), strings), dtype=np.uint64, count=len(strings))
    negative = unsigned >= np.uint64(_INT64_MIN_BITS)
    overflow = unsigned == np.uint64(_INT64_MIN_BITS)
    if overflow.any():
        key = strings[int(np.flatnonzero(overflow)[0])]
        raise OverflowError(f"FARM_FINGERPRINT({key!r}) is -2**63, and BigQuery's ABS overflows on it (int64 overflow)")
    magnitude = np.where(negative, np.uint64(0) - unsigned, unsigned)  # |signed value| (2**64 - u when negative)
    return (magnitude % np.uint64(100)).astype(np.int64)


def _factorize(keys) -> tuple[np.ndarray, object]:
    """(codes with -1 for NULL, distinct non-NULL keys) of a 1-D collection of keys."""
    if isinstance(keys, pd.DataFrame):
        raise TypeError("split keys must be one column (a Series), not a DataFrame")
    if isinstance(keys, (str, bytes, bytearray)) or not isinstance(keys, Iterable):
        raise TypeError(f"split keys must be a 1-D collection of keys, got the scalar {keys!r}")
    if not isinstance(keys, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray, np.ndarray)):
        keys = _as_array(keys)
    if isinstance(keys, np.ndarray) and keys.ndim != 1:
        raise TypeError(f"split keys must be a 1-D collection of keys, got shape {keys.shape}")
    codes, uniques = pd.factorize(keys, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), uniques


def _as_array(keys) -> np.ndarray:
    keys = list(keys)
    if keys and all(type(k) is int for k in keys):
        try:
            return np.array(keys, dtype=np.int64)
        except OverflowError:
            pass
    array = np.empty(len(keys), dtype=object)
    array[:] = keys
    return array


def _cast_to_string(uniques) -> list:
    """BigQuery ``CAST(x AS STRING)`` of distinct non-NULL keys, as a list of str (bytes kept as bytes)."""
    dtype = getattr(uniques, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        return _cast_to_string(pd.Index(np.asarray(uniques)))
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = pd.DatetimeIndex(uniques).tz_convert("UTC").tz_localize(None)
        return [text + "+00" for text in _format_datetimes(utc.to_numpy())]
    if dtype is not None and getattr(dtype, "kind", None) in ("i", "u", "b"):
        values = np.asarray(uniques, dtype=bool if dtype.kind == "b" else None)
        if values.dtype.kind == "b":
            return ["true" if v else "false" for v in values.tolist()]
        return list(map(str, values.tolist()))
    if dtype is not None and dtype.kind == "M":
        values = np.asarray(uniques)
        if np.datetime_data(values.dtype)[0] in ("D", "W", "M", "Y"):
            return np.datetime_as_string(values.astype("datetime64[D]"), unit="D").tolist()
        return _format_datetimes(values)
    if dtype is not None and dtype.kind in "fcm":
        raise TypeError(_FLOAT_MESSAGE.format(dtype) if dtype.kind != "m" else _unsupported(dtype))
    if dtype is not None and getattr(dtype, "name", "") == "dbdate":  # db-dtypes' DATE
        return [v.isoformat() for v in uniques]
    values = np.asarray(uniques, dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) in ("string", "bytes", "empty"):
        return values.tolist()  # strings as is, bytes as is
    return [_cast_one(v) for v in values.tolist()]


_FLOAT_MESSAGE = (
    "float split keys ({}) are not supported: BigQuery's CAST(FLOAT64 AS STRING) formatting is not "
    "reproduced. Integer keys that pandas made float because of nulls: cast them with .astype('Int64')"
)


def _cast_one(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (np.timedelta64, _dt.timedelta)):
        raise TypeError(_unsupported(type(value).__name__))
    if isinstance(value, (numbers.Integral, np.integer)):
        return str(int(value))
    if isinstance(value, (pd.Timestamp, _dt.datetime, np.datetime64)):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            naive = stamp.tz_convert("UTC").tz_localize(None)
            return _format_datetimes(np.array([naive.to_datetime64()]))[0] + "+00"
        return _format_datetimes(np.array([stamp.to_datetime64()]))[0]
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, (float, np.floating)):
        raise TypeError(_FLOAT_MESSAGE.format(type(value).__name__))
    raise TypeError(_unsupported(f"{type(value).__name__} ({value!r})"))


def _unsupported(what) -> str:
    return f"unsupported split key type {what}; supported: integers, strings, bytes, bools, dates, datetimes"


def _format_datetimes(values: np.ndarray) -> list:
    """``YYYY-MM-DD HH:MM:SS[.fff|.ffffff]`` of naive datetime64 values, BigQuery's sub-second rule."""
    micros = values.astype("datetime64[us]")  # truncates nanoseconds toward the past
    text = np.datetime_as_string(micros, unit="us").tolist()  # YYYY-MM-DDTHH:MM:SS.ffffff
    out = []
    for s in text:
        date, time = s.split("T")
        whole, fraction = time.split(".")
        if fraction == "000000":
            out.append(f"{date} {whole}")
        elif fraction.endswith("000"):
            out.append(f"{date} {whole}.{fraction[:3]}")
        else:
            out.append(f"{date} {whole}.{fraction}")
    return out


SAMPLE_KEYS = 65_536
_SAMPLE_SALT = "emberharmony-smp"  # pandas' hash_key (16 bytes): a hash unrelated to FARM_FINGERPRINT's buckets


def distinct_keys(keys, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the distinct keys (k,), each one's split (k,), each one's row count (k,)) of one chunk's split keys (n,)
    and their splits (n,); a key's split is that of its first row."""
    codes, distinct = pd.factorize(np.asarray(keys), use_na_sentinel=False)
    first = np.empty(len(distinct), np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # each distinct key's first row
    return np.asarray(distinct), np.asarray(splits, dtype=object)[first], np.bincount(codes, minlength=len(distinct))


class SplitKeySample:
    """The splits of a bounded, uniform sample of the distinct split keys seen: the ``capacity`` keys with the
    smallest salted 64-bit hash (a bottom-k sample, independent of the split's own hash), so checking the
    split fractions over a backfill holds ``capacity`` keys, not one entry per key of the table.

    ``distinct`` is exact while at most ``capacity`` keys were seen, else estimated as (k - 1) / h_k, h_k the
    k-th smallest hash as a fraction of 2**64 (relative standard error about 1 / sqrt(k): 0.4% at 65,536)."""

    def __init__(self, capacity: int = SAMPLE_KEYS):
        self.capacity = int(capacity)
        self.hashes = np.empty(0, np.uint64)  # ascending
        self.splits = np.empty(0, dtype=object)
        self.sampled = False  # True once a key was left out: the shares and ``distinct`` are then estimates

    def add(self, keys, splits) -> None:
        """One chunk's split keys (n,) (compared as text) and each key's split (n,)."""
        distinct, key_splits, _ = distinct_keys(keys, splits)
        self.add_distinct(distinct, key_splits)

    def add_distinct(self, distinct, splits) -> None:
        """Distinct split keys (k,) and each one's split (k,), as ``distinct_keys`` gives them."""
        hashes = pd.util.hash_array(
            np.asarray(distinct).astype(str).astype(object), hash_key=_SAMPLE_SALT, categorize=False
        )
        splits = np.asarray(splits, dtype=object)
        if len(self.hashes) >= self.capacity:  # only a hash below the k-th smallest can enter
            keep = hashes < self.hashes[-1]
            self.sampled |= bool((hashes > self.hashes[-1]).any())
            hashes, splits = hashes[keep], splits[keep]
        if not len(hashes):
            return
        both = np.concatenate([self.hashes, hashes])
        _, first = np.unique(both, return_index=True)  # ascending; a key already sampled keeps its split
        self.sampled |= len(first) > self.capacity
        first = first[: self.capacity]
        self.hashes, self.splits = both[first], np.concatenate([self.splits, splits])[first]

    @property
    def distinct(self) -> int:
        k = len(self.hashes)
        if not self.sampled:
            return k
        return int(round((k - 1) / ((float(self.hashes[-1]) + 1.0) / 2.0**64)))


__all__ = [
    "SplitKeySample",
    "assign_split",
    "split_bucket",
    "validate_fractions",
    "split_thresholds",
    "split_sql_expression",
    "farm_fingerprint",
    "SPLIT_NAMES",
    "DEFAULT_FRACTIONS",
]
