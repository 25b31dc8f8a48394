"""A mergeable median sketch: exact while small, log-bucketed with a relative bound beyond.

Two modes, chosen by the data only (never by merge order):

* **exact**: sorted distinct values and their counts, while a column's train data
  has at most ``max_exact`` distinct values (in the partition, or in the union of
  merged partitions). The median equals ``np.median`` (mean of the two middle
  values) bit for bit.
* **buckets**: a DDSketch-style histogram. A non-zero value ``x`` goes to bucket
  ``i = ceil(log(|x|) / log(gamma))`` of its sign, ``gamma = (1 + alpha) / (1 - alpha)``;
  zeros (and subnormals) have their own bucket. A bucket is reported as
  ``2 * gamma**i / (gamma + 1)``, within relative error ``alpha`` of every value in
  it. The median is the mean of the reported middle order statistics lo_hat, hi_hat:
  ``|m_hat - m| <= alpha * (|lo| + |hi|) / 2`` (``alpha * |m|`` when lo, hi share a
  sign). Its size is the number of occupied buckets: at most the number of distinct
  values, and at most ``log(max|x| / min|x|) / log(gamma)`` per sign, independent
  of the row count.

Merging adds integer counts: it is exact, commutative and associative, so any
merge order (and any partitioning of the rows) gives the identical sketch.
Converting exact -> buckets is the same map applied value by value, so a sketch
that became bucketed early equals one that became bucketed late.

Caveat of the relative bound: for a column whose spread is tiny next to its
magnitude (latitudes ~40.7 +- 0.05) alpha = 1e-4 means an error up to 0.004;
raise ``median_exact_max_values`` or lower ``median_relative_accuracy`` for such data.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pyarrow as pa

_TINY = np.finfo(np.float64).tiny


class MedianSketch:
    """Mergeable summary of a float64 column's non-null train values (see module docs)."""

    __slots__ = (
        "alpha",
        "max_exact",
        "values",
        "counts",
        "neg_index",
        "neg_counts",
        "pos_index",
        "pos_counts",
        "zero_count",
    )

    def __init__(self, alpha: float = 1e-4, max_exact: int = 10_000):
        self.alpha = float(alpha)
        self.max_exact = int(max_exact)
        self.values: np.ndarray | None = np.empty(0, np.float64)  # exact mode when not None
        self.counts: np.ndarray | None = np.empty(0, np.int64)
        self.neg_index: np.ndarray | None = None  # bucket mode: bucket indices and counts of each sign
        self.neg_counts: np.ndarray | None = None
        self.pos_index: np.ndarray | None = None
        self.pos_counts: np.ndarray | None = None
        self.zero_count = 0

    def _exact_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) of an exact sketch."""
        assert self.values is not None and self.counts is not None, "not an exact sketch"
        return self.values, self.counts

    def _bucket_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(neg_index, neg_counts, pos_index, pos_counts) of a bucketed sketch."""
        neg_index, neg_counts, pos_index, pos_counts = self.neg_index, self.neg_counts, self.pos_index, self.pos_counts
        assert neg_index is not None and neg_counts is not None, "not a bucketed sketch"
        assert pos_index is not None and pos_counts is not None, "not a bucketed sketch"
        return neg_index, neg_counts, pos_index, pos_counts

    # ------------------------------------------------------------------ building
    @property
    def exact(self) -> bool:
        return self.values is not None

    @property
    def gamma(self) -> float:
        return (1.0 + self.alpha) / (1.0 - self.alpha)

    @property
    def count(self) -> int:
        if self.exact:
            return int(self._exact_arrays()[1].sum())
        _, neg_counts, _, pos_counts = self._bucket_arrays()
        return int(neg_counts.sum() + pos_counts.sum() + self.zero_count)

    @classmethod
    def from_values(cls, x: np.ndarray, alpha: float = 1e-4, max_exact: int = 10_000) -> MedianSketch:
        """Sketch of finite float values ``x`` (nulls already removed)."""
        sketch = cls(alpha, max_exact)
        x = np.asarray(x, dtype=np.float64).ravel()
        values, counts = np.unique(x, return_counts=True)
        sketch.values, sketch.counts = values, counts.astype(np.int64)
        if len(values) > sketch.max_exact:
            sketch._to_buckets()
        return sketch

    def _bucketize(self, values: np.ndarray, counts: np.ndarray):
        """(negative, positive) (bucket indices, counts) and the zero count of distinct ``values`` in ascending
        order (an exact sketch's) with their ``counts``."""
        log_gamma = math.log(self.gamma)
        mag = np.abs(values)
        zero = mag < _TINY
        out = []
        for mask, descending in ((values < 0, True), (values > 0, False)):
            mask = mask & ~zero
            idx = np.ceil(np.log(mag[mask]) / log_gamma).astype(np.int64)
            weights = counts[mask]
            if descending:  # negative values ascending: magnitudes, and so bucket indices, descending
                idx, weights = idx[::-1], weights[::-1]
            if len(idx) and np.all(idx[1:] >= idx[:-1]):  # sorted values give runs of one index: no second sort
                first = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]]))
                out.append((idx[first], np.add.reduceat(weights.astype(np.int64), first)))
            else:
                uidx, inv = np.unique(idx, return_inverse=True)
                out.append((uidx, np.bincount(inv, weights=weights, minlength=len(uidx)).astype(np.int64)))
        return out[0], out[1], int(counts[zero].sum())

    def _to_buckets(self) -> None:
        (self.neg_index, self.neg_counts), (self.pos_index, self.pos_counts), self.zero_count = self._bucketize(
            *self._exact_arrays()
        )
        self.values = None
        self.counts = None

    # ------------------------------------------------------------------ merging
    def merge(self, other: MedianSketch) -> MedianSketch:
        """A new sketch of both inputs' values (neither input is changed)."""
        if (self.alpha, self.max_exact) != (other.alpha, other.max_exact):
            raise ValueError(
                f"cannot merge median sketches with different settings: alpha/max_exact "
                f"{self.alpha}/{self.max_exact} vs {other.alpha}/{other.max_exact}"
            )
        out = MedianSketch(self.alpha, self.max_exact)
        if self.exact and other.exact:
            (self_values, self_counts), (other_values, other_counts) = self._exact_arrays(), other._exact_arrays()
            values = np.concatenate([self_values, other_values])
            counts = np.concatenate([self_counts, other_counts])
            uniq, inv = np.unique(values, return_inverse=True)
            out.values = uniq
            out.counts = np.bincount(inv, weights=counts, minlength=len(uniq)).astype(np.int64)
            if len(uniq) > out.max_exact:
                out._to_buckets()
            return out
        a, b = (s if not s.exact else s._as_bucketed() for s in (self, other))
        out.values = out.counts = None
        a_neg_index, a_neg_counts, a_pos_index, a_pos_counts = a._bucket_arrays()
        b_neg_index, b_neg_counts, b_pos_index, b_pos_counts = b._bucket_arrays()
        out.neg_index, out.neg_counts = _add(a_neg_index, a_neg_counts, b_neg_index, b_neg_counts)
        out.pos_index, out.pos_counts = _add(a_pos_index, a_pos_counts, b_pos_index, b_pos_counts)
        out.zero_count = a.zero_count + b.zero_count
        return out

    def _as_bucketed(self) -> MedianSketch:
        copy = MedianSketch(self.alpha, self.max_exact)
        copy.values, copy.counts = self.values, self.counts
        copy._to_buckets()
        return copy

    # ------------------------------------------------------------------ queries
    def _value_at_ranks(self, ranks: np.ndarray) -> np.ndarray:
        """Values at 0-based ranks of the sorted data (bucket representatives in bucket mode)."""
        if self.exact:
            values, counts = self._exact_arrays()
        else:
            neg_index, neg_counts, pos_index, pos_counts = self._bucket_arrays()
            g = self.gamma
            neg = -(2.0 * np.power(g, neg_index[::-1].astype(np.float64)) / (g + 1.0))
            pos = 2.0 * np.power(g, pos_index.astype(np.float64)) / (g + 1.0)
            values = np.concatenate([neg, [0.0], pos])
            counts = np.concatenate([neg_counts[::-1], [self.zero_count], pos_counts])
        cum = np.cumsum(counts)
        return values[np.searchsorted(cum, np.asarray(ranks), side="right")]

    def median(self) -> float:
        """The median (NaN when empty): exact, or within the module's stated bound."""
        n = self.count
        if n == 0:
            return float("nan")
        lo, hi = self._value_at_ranks(np.array([(n - 1) // 2, n // 2]))
        return float(lo) if lo == hi else float((lo + hi) / 2.0)

    def quantile(self, q: float) -> float:
        """Lower order statistic at rank floor(q * (n - 1)); same accuracy as the median."""
        n = self.count
        if n == 0:
            return float("nan")
        return float(self._value_at_ranks(np.array([int(math.floor(q * (n - 1)))]))[0])

    def error_bound(self) -> float:
        """Upper bound on |median() - true median|: 0 when exact."""
        if self.exact or self.count == 0:
            return 0.0
        n = self.count
        lo, hi = self._value_at_ranks(np.array([(n - 1) // 2, n // 2]))
        # |reported| >= |true| / (1 + alpha)... bound stated on true values; from the
        # reported ones: |true| <= |reported| / (1 - alpha).
        return float(self.alpha * (abs(lo) + abs(hi)) / 2.0 / (1.0 - self.alpha))

    def nbytes(self) -> int:
        if self.exact:
            return int(sum(a.nbytes for a in self._exact_arrays()))
        return int(sum(a.nbytes for a in self._bucket_arrays()))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alpha": self.alpha,
            "max_exact": self.max_exact,
            "mode": "exact" if self.exact else "buckets",
        }
        if self.exact:  # the float64 bytes (an exact round trip, faster than repr), ascending: as differences
            values, counts = self._exact_arrays()
            out["values"] = _pack(values, "<f8", ascending=True)
            out["counts"] = _pack(counts, _int_layout(counts))
        else:
            out.update(
                {
                    name: _pack(getattr(self, name), _int_layout(getattr(self, name)), ascending=name.endswith("index"))
                    for name in ("neg_index", "neg_counts", "pos_index", "pos_counts")
                }
            )
            out["zero_count"] = int(self.zero_count)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedianSketch:
        sketch = cls(data["alpha"], data["max_exact"])
        if data["mode"] == "exact":
            sketch.values = _unpack(data["values"], "<f8", np.float64)
            sketch.counts = _unpack(data["counts"], "<i8", np.int64)
        else:
            sketch.values = sketch.counts = None
            for name in ("neg_index", "neg_counts", "pos_index", "pos_counts"):
                setattr(sketch, name, _unpack(data[name], "<i8", np.int64))
            sketch.zero_count = int(data["zero_count"])
        return sketch

    def __eq__(self, other) -> bool:
        return isinstance(other, MedianSketch) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        mode = "exact" if self.exact else "buckets"
        return f"MedianSketch(mode={mode}, count={self.count}, alpha={self.alpha}, max_exact={self.max_exact})"


def _add(ia: np.ndarray, ca: np.ndarray, ib: np.ndarray, cb: np.ndarray):
    idx = np.concatenate([ia, ib])
    cnt = np.concatenate([ca, cb])
    uidx, inv = np.unique(idx, return_inverse=True)
    return uidx, np.bincount(inv, weights=cnt, minlength=len(uidx)).astype(np.int64)


def _int_layout(values: np.ndarray) -> str:
    """The narrowest little-endian integer layout holding every value (counts are mostly 1: one byte each)."""
    low, high = (int(values.min()), int(values.max())) if len(values) else (0, 0)
    for layout in ("<u1", "<u2", "<u4") if low >= 0 else ("<i1", "<i2", "<i4"):
        info = np.iinfo(np.dtype(layout))
        if info.min <= low and high <= info.max:
            return layout
    return "<i8"


_SIGN = np.uint64(1 << 63)
_ZSTD = pa.Codec("zstd", 1)


def _order_keys(values: np.ndarray) -> np.ndarray:
    """(n,) uint64 keys in the same order as ``values`` (float64: sign-flipped bit patterns; int64: offset)."""
    if values.dtype.kind == "f":
        bits = values.astype("<f8").view("<u8")
        return np.where(bits & _SIGN, ~bits, bits | _SIGN)
    return values.astype("<i8").view("<u8") ^ _SIGN


def _from_order_keys(keys: np.ndarray, layout: str) -> np.ndarray:
    if np.dtype(layout).kind == "f":
        return np.where(keys & _SIGN, keys ^ _SIGN, ~keys).view("<f8")
    return (keys ^ _SIGN).view("<i8")


def _pack(values: np.ndarray, layout: str, ascending: bool = False) -> dict:
    """A 1-d array as JSON: its little-endian bytes in base64 (``{"b64": ..., "dtype": layout}``). ``ascending``
    values are stored as differences of order-preserving 64-bit keys (``"delta": "ordered"``: sorted float64
    values differ in their low bits only); the bytes are zstd-compressed (``"codec"``, ``"size"``) when that is
    smaller (sizes on the demo: docs/benchmarks.md, where the time goes)."""
    data = np.ascontiguousarray(values, dtype=layout)
    out: dict = {"dtype": layout}
    if ascending and len(data):
        keys = _order_keys(data)
        data = np.diff(keys, prepend=np.uint64(0))  # wraps modulo 2**64; the cumulative sum undoes it exactly
        out["delta"] = "ordered"
    payload = data.tobytes()
    packed = _ZSTD.compress(payload, asbytes=True)
    if len(packed) < len(payload):
        out.update(codec="zstd", size=len(payload))
        payload = packed
    out["b64"] = base64.b64encode(payload).decode("ascii")
    return out


def _unpack(stored, layout: str, dtype) -> np.ndarray:
    """Inverse of ``_pack`` (and of its earlier formats: plain base64, or a JSON list)."""
    if not isinstance(stored, dict):
        return np.asarray(stored, dtype=dtype)
    payload = base64.b64decode(stored["b64"])
    if stored.get("codec") == "zstd":
        payload = _ZSTD.decompress(payload, decompressed_size=int(stored["size"]), asbytes=True)
    elif stored.get("codec") is not None:
        raise ValueError(f"median sketch array: unknown codec {stored['codec']!r}")
    stored_layout = stored.get("dtype", layout)
    if stored.get("delta") == "ordered":
        keys = np.cumsum(np.frombuffer(payload, dtype="<u8"), dtype=np.uint64)
        return _from_order_keys(keys, stored_layout).astype(dtype)
    return np.frombuffer(payload, dtype=stored_layout).astype(dtype)
