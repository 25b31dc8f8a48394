"""Days as a map: folding per-day carry summaries gives, after every day, exactly the carry the chained
``Windower`` passes give (keys, seen, rows, time, split), whatever the chunking and batching."""

import os
import time

import numpy as np
import pyarrow as pa
import pytest

from emberharmony_core import layout
from emberharmony_core.carry_fold import day_summary, fold_carry
from emberharmony_core.layout import CarryWriter, StoredCarry
from emberharmony_core.ops import get_backend
from emberharmony_core.store import ArtifactStore
from emberharmony_core.windowing import ChunkRows, WindowCarry, Windower

NUMPY = get_backend("numpy")


def random_days(rng, key_kind: str, days: int, f: int, dtype):
    """Per day its rows (features (n, F), entity (n,), time (n,), split (n,)) grouped by entity in ascending key
    order: each day a random subset of the entities, 1..20 rows each; some days empty."""
    pool = (
        sorted(f"s{int(i):04d}" for i in rng.choice(10_000, 40, replace=False))
        if key_kind == "str"
        else sorted(int(i) for i in rng.choice(np.arange(-5_000, 5_000), 40, replace=False))
    )
    out = []
    for d in range(days):
        present = [] if rng.random() < 0.2 else [k for k in pool if rng.random() < 0.6]
        counts = rng.integers(1, 21, len(present))
        entity = np.array([k for k, c in zip(present, counts, strict=True) for _ in range(c)], dtype=object)
        n = len(entity)
        steps = np.concatenate([np.arange(c) for c in counts]) if n else np.zeros(0)
        times = d * 10**12 + steps.astype(np.int64)
        out.append((rng.standard_normal((n, f)).astype(dtype), entity, times, rng.integers(0, 3, n).astype(np.int8)))
    return out


def chunks_of(day, rng):
    """The day's rows in chunks of random sizes (entities cross chunk boundaries)."""
    features, entity, times, split = day
    chunks, c0 = [], 0
    while c0 < len(entity):
        size = int(rng.integers(1, 30))
        s = slice(c0, c0 + size)
        chunks.append(ChunkRows(features[s], entity[s], times[s], split[s]))
        c0 += size
    return chunks


class Batched:
    """A carry as a source of random-sized batches (as a stored carry is read)."""

    def __init__(self, carry: WindowCarry, rng):
        self.carry, self.rng = carry, rng
        self.window_size, self.n_features = carry.window_size, carry.n_features

    def batches(self):
        i = 0
        while i < len(self.carry):
            size = int(self.rng.integers(1, 9))
            yield self.carry.slice(i, i + size)
            i += size


def assert_same(got: WindowCarry, want: WindowCarry):
    assert got.keys.type == want.keys.type or not len(want)
    assert got.keys.to_pylist() == want.keys.to_pylist()
    for name in ("seen", "rows", "time", "split"):
        a, b = getattr(got, name), getattr(want, name)
        assert np.array_equal(a, b), name
        assert a.dtype == b.dtype, name


def windower_carry(w, carry, chunks, f, dtype, strides=(1,)):
    """Today's chain: the windows pass of a day, the previous carry in, the new one collected from its sink."""
    got = []
    # an empty in-memory carry (int64 keys) before string keys trips _CarryCursor's key-type check: pass None
    carry = carry if carry is not None and len(carry) else None
    windower = Windower(w, list(strides), carry, n_features=f, dtype=dtype, sink=got.append)
    for chunk in chunks:
        windower.add(chunk, NUMPY)
    windower.finish()
    return WindowCarry.concat(got, w, f, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("key_kind", ["str", "int"])
@pytest.mark.parametrize("w", [1, 2, 5])
def test_folded_day_summaries_equal_the_chained_windower_carry_after_every_day(w, key_kind, dtype):
    rng = np.random.default_rng([w, len(key_kind), len(dtype)])
    f = 3
    chained = folded = whole = None
    for day in random_days(rng, key_kind, days=8, f=f, dtype=dtype):
        chained = windower_carry(w, chained, chunks_of(day, rng), f, dtype)
        summary = day_summary(chunks_of(day, rng), w, f, dtype)
        # the summary is the carry of a windows pass with no strides and no previous carry
        assert_same(summary, windower_carry(w, None, chunks_of(day, rng), f, dtype, strides=()))
        streamed = []
        previous = None if folded is None else Batched(folded, rng)
        result = fold_carry(previous, Batched(summary, rng), sink=streamed.append)
        assert result is None and all(len(b) for b in streamed)
        folded = WindowCarry.concat(streamed, w, f, dtype)
        assert_same(folded, chained)
        whole = fold_carry(whole, summary)  # in memory, one batch each, sink=None: the whole carry returned
        assert_same(whole, chained)
    assert len(chained)  # the data had entities


def test_fold_through_stored_carries_in_small_batches(tmp_path, monkeypatch):
    """Summaries and folded carries written by ``CarryWriter`` and read back by ``StoredCarry``, a batch per
    hand-over: the merge-join crosses every batch boundary of both sources."""
    monkeypatch.setattr(layout, "_CARRY_BATCH_BYTES", 1)
    rng = np.random.default_rng(7)
    store, w, f = ArtifactStore(tmp_path / "artifacts"), 4, 2
    chained = None
    for d, day in enumerate(random_days(rng, "str", days=6, f=f, dtype="float64")):
        chained = windower_carry(w, chained, chunks_of(day, rng), f, "float64")
        with CarryWriter(store, f"summary{d}", w, f, "float64") as sink:
            day_summary(chunks_of(day, rng), w, f, "float64", sink=sink)
        with CarryWriter(store, f"d{d}", w, f, "float64") as sink:
            fold_carry(StoredCarry(store, f"d{d - 1}") if d else None, StoredCarry(store, f"summary{d}"), sink=sink)
        assert_same(StoredCarry(store, f"d{d}").load(), chained)


def test_edge_cases_first_day_empty_day_and_entities_in_one_side_only():
    w, f = 3, 1
    prev = WindowCarry(
        w,
        f,
        "float64",
        keys=pa.array(["a", "c"]),
        seen=[5, 1],
        rows=[[[1.0], [2.0]], [[0.0], [9.0]]],
        time=[[1, 2], [0, 3]],
        split=[[0, 0], [0, 1]],
    )
    day = WindowCarry(
        w,
        f,
        "float64",
        keys=pa.array(["b", "c"]),
        seen=[1, 1],
        rows=[[[0.0], [4.0]], [[0.0], [7.0]]],
        time=[[0, 10], [0, 11]],
        split=[[0, 2], [0, 2]],
    )
    out = fold_carry(prev, day)
    assert out.keys.to_pylist() == ["a", "b", "c"]
    assert out.seen.tolist() == [5, 1, 2]
    assert out.rows[:, :, 0].tolist() == [[1.0, 2.0], [0.0, 4.0], [9.0, 7.0]]
    assert out.time.tolist() == [[1, 2], [0, 10], [3, 11]] and out.split.tolist() == [[0, 0], [0, 2], [1, 2]]
    assert_same(fold_carry(None, day), day)  # the first day: its summary
    empty = WindowCarry(w, f, "float64")  # an empty day (int64 keys: an empty side imposes no key type)
    assert_same(fold_carry(prev, empty), prev)
    assert_same(fold_carry(empty, day), day)
    assert len(day_summary([], w, f, "float64")) == 0


def test_mismatched_settings_and_key_types_raise_naming_both():
    day = WindowCarry(3, 2, keys=pa.array(["a"]), seen=[1])
    with pytest.raises(ValueError, match=r"window_size 5, the day's summary window_size 3"):
        fold_carry(WindowCarry(5, 2, keys=pa.array(["a"]), seen=[1]), day)
    with pytest.raises(ValueError, match=r"n_features 4, the day's summary n_features 2"):
        fold_carry(WindowCarry(3, 4, keys=pa.array(["a"]), seen=[1]), day)
    with pytest.raises(ValueError, match=r"keys are int64, the day's string"):
        fold_carry(WindowCarry(3, 2, keys=pa.array([1]), seen=[1]), day)
    rows = ChunkRows(
        np.ones((3, 2), np.float32),
        np.array(["b", "b", "a"], dtype=object),
        np.arange(3, dtype=np.int64),
        np.zeros(3, np.int8),
    )
    with pytest.raises(ValueError, match=r"entity 'b' comes before 'a'"):
        day_summary([rows], 3, 2)
    with pytest.raises(ValueError, match=r"chunk has 2 feature columns, n_features is 4"):
        day_summary([rows], 3, 4)


def _best(fn, repeat=2):
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _day_chunks(n_entities, per_entity, f, rng, rows_per_chunk=100_000):
    """A day of ``per_entity`` rows for each of ``n_entities`` string keys, in chunks of ``rows_per_chunk`` rows."""
    keys = pa.array([f"e{i:07d}" for i in range(n_entities)])
    keys = keys.take(pa.array(np.repeat(np.arange(n_entities), per_entity)))
    n = len(keys)
    features = rng.standard_normal((n, f), dtype=np.float32)
    times = np.tile(np.arange(per_entity, dtype=np.int64), n_entities)
    split = np.zeros(n, np.int8)
    return [
        ChunkRows(
            features[c : c + rows_per_chunk],
            None,
            times[c : c + rows_per_chunk],
            split[c : c + rows_per_chunk],
            entity_arrow=keys.slice(c, rows_per_chunk),
        )
        for c in range(0, n, rows_per_chunk)
    ]


def _windows_pass(chunks, w, carry, f):
    windower = Windower(w, [1, 3, 5], carry, n_features=f, sink=lambda batch: None)
    for chunk in chunks:
        windower.add(chunk, NUMPY)
    windower.finish()


BIG = os.environ.get("EMBERHARMONY_FOLD_BENCH") == "1"  # full size: 1,000,000 rows / entities (about 4 GiB)


def test_day_summary_is_cheaper_than_a_windows_pass(capsys):
    """Printed, not asserted: a day summary vs the strides-1/3/5 windows pass (float32, w = 5, F = 40)."""
    rng = np.random.default_rng(0)
    n_rows, f, w = (1_000_000 if BIG else 100_000), 40, 5
    chunks = _day_chunks(6_400 if BIG else 640, n_rows // (6_400 if BIG else 640), f, rng)
    summary = _best(lambda: day_summary(chunks, w, f, "float32", sink=lambda batch: None))

    def empty_strides():
        windower = Windower(w, [], None, n_features=f, sink=lambda batch: None)
        for chunk in chunks:
            windower.add(chunk, NUMPY)
        windower.finish()

    no_strides = _best(empty_strides)
    strided = _best(lambda: _windows_pass(chunks, w, None, f))
    with capsys.disabled():
        print(
            f"\nday summary of {n_rows:,} rows x {f} float32, {len(chunks)} chunks: "
            f"day_summary {summary * 1e3:.1f} ms, "
            f"Windower(strides=[]) {no_strides * 1e3:.1f} ms, Windower(strides 1/3/5) {strided * 1e3:.1f} ms"
        )


def test_fold_is_cheap_next_to_a_windows_pass(capsys):
    """Printed, not asserted: folding a day into a carry of E entities (w = 5, F = 40, float32) vs the windows
    pass over a day of 3 rows per entity that would make the same carry today (the previous carry in)."""
    rng = np.random.default_rng(1)
    e, f, w = (1_000_000 if BIG else 50_000), 40, 5
    chunks = _day_chunks(e, 3, f, rng)
    previous = day_summary(_day_chunks(e, 3, f, rng), w, f, "float32")
    day = day_summary(chunks, w, f, "float32")
    per_batch = max(1, 8 * 2**20 // (4 * (w - 1) * f + 40))  # stored carry batches of about 8 MiB

    class Stored:  # the carries as layout.StoredCarry hands them: batches of a few MiB
        def __init__(self, carry):
            self.carry, self.window_size, self.n_features = carry, carry.window_size, carry.n_features

        def batches(self):
            return (self.carry.slice(i, i + per_batch) for i in range(0, len(self.carry), per_batch))

    fold = _best(lambda: fold_carry(Stored(previous), Stored(day), sink=lambda batch: None))
    # a day of every other entity and as many new ones: the general merge path (hash look-ups, sorted union)
    half = day.take(np.arange(0, e, 2))
    new = WindowCarry(
        w,
        f,
        "float32",
        keys=pa.array([f"e{i:07d}x" for i in range(0, e, 2)]),
        seen=half.seen,
        rows=half.rows,
        time=half.time,
        split=half.split,
    )
    mixed = WindowCarry.concat([half, new], w, f)
    mixed = WindowCarry(w, f, "float32", mixed.keys, mixed.seen, mixed.rows, mixed.time, mixed.split)  # key order
    fold_mixed = _best(lambda: fold_carry(Stored(previous), Stored(mixed), sink=lambda batch: None))
    summary = _best(lambda: day_summary(chunks, w, f, "float32", sink=lambda batch: None), repeat=1)
    heavy = _best(lambda: _windows_pass(chunks, w, Stored(previous), f), repeat=1)
    with capsys.disabled():
        print(
            f"\nfold of {e:,} entities x w={w} x {f} float32: {fold:.2f} s (same entities), {fold_mixed:.2f} s (half "
            f"of them and {e // 2:,} new); day_summary of the day "
            f"({3 * e:,} rows): {summary:.2f} s; windows pass (strides 1/3/5, carry in and out): {heavy:.2f} s"
        )
