"""``max_gap`` in the one windowing rule, and split blocks for entity-less series.

Every expectation comes from a plain reference over each entity's whole series (NumPy loops, not
``Windower``): windows start at rows 0, s, 2s, ...; a window mixing splits is dropped; then a window
whose largest step between consecutive rows exceeds ``max_gap`` is dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emberharmony_core.features.split_blocks import split_block_index, split_block_keys
from emberharmony_core.ops import get_backend
from emberharmony_core.windowing import ChunkRows, Windower, parse_duration

HOUR = 3600 * 10**9
NUMPY = get_backend("numpy")


def irregular_series(seed=0, entities=4, rows=120):
    """Rows of several entities, hourly with random holes (some long), a few splits per entity."""
    rng = np.random.default_rng(seed)
    frames = []
    for e in range(entities):
        steps = rng.choice([1, 1, 1, 1, 2, 3, 7, 30], size=rows)  # hours between rows
        time = np.cumsum(steps) * HOUR + 1_767_225_600 * 10**9  # from 2026-01-01
        split = np.repeat(rng.integers(0, 3, size=rows // 40 + 1), 40)[:rows] if e % 2 else np.zeros(rows, np.int8)
        frames.append(
            pd.DataFrame(
                {
                    "entity": f"e{e}",
                    "time": time,
                    "split": split.astype(np.int8),
                    "x": rng.normal(size=rows),
                    "y": rng.normal(size=rows),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def reference(frame, w, s, max_gap_ns):
    """{(entity, end time): (start row, end row)} kept, and the counts: candidates, mixed, gap."""
    kept, counts = {}, {"candidates": 0, "mixed": 0, "gap": 0}
    for entity, rows in frame.groupby("entity", sort=False):
        time, split = rows["time"].to_numpy(), rows["split"].to_numpy()
        for start in range(0, len(rows) - w + 1, s):
            end = start + w - 1
            counts["candidates"] += 1
            if len(set(split[start : end + 1])) > 1:
                counts["mixed"] += 1
            elif max_gap_ns is not None and w > 1 and np.diff(time[start : end + 1]).max() > max_gap_ns:
                counts["gap"] += 1
            else:
                kept[(entity, int(time[end]))] = rows[["x", "y"]].to_numpy()[start : end + 1].reshape(-1)
    return kept, counts


def run_windower(frame, w, strides, max_gap, chunk=None, partition_hours=None):
    """Windows found by ``Windower`` over ``frame`` cut into partitions (carry stored and reloaded) and chunks."""
    if partition_hours:
        part = frame["time"] // (partition_hours * HOUR)
        parts = [p for _, p in frame.groupby(part, sort=True)]
        parts = [p.sort_values(["entity", "time"], kind="stable") for p in parts]
    else:
        parts = [frame]
    carry, found = None, {s: {} for s in strides}
    counts = {s: {"candidates": 0, "mixed": 0, "gap": 0, "expected": 0} for s in strides}
    gaps = 0
    for rows in parts:
        windower = Windower(w, strides, carry, n_features=2, dtype="float64", max_gap=max_gap)
        size = chunk or len(rows)
        for c0 in range(0, len(rows), size):
            piece = rows.iloc[c0 : c0 + size]
            chunk_rows = ChunkRows(
                features=piece[["x", "y"]].to_numpy(np.float64),
                entity=piece["entity"].to_numpy(object),
                time=piece["time"].to_numpy(np.int64),
                split=piece["split"].to_numpy(np.int8),
            )
            made = windower.add(chunk_rows, NUMPY)
            gaps += made.gaps
            data = NUMPY.to_numpy(made.rows)
            for s in strides:
                for start, end in zip(made.starts[s], made.end_row[s], strict=True):
                    key = (chunk_rows.entity[end], int(chunk_rows.time[end]))
                    assert key not in found[s], "a window made twice"
                    found[s][key] = data[start : start + w].reshape(-1)
                counts[s]["candidates"] += made.candidates[s]
                counts[s]["mixed"] += made.mixed_split_dropped[s]
                counts[s]["gap"] += made.gap_dropped[s]
                counts[s]["expected"] += made.expected[s]
                assert made.candidates[s] - made.mixed_split_dropped[s] - made.gap_dropped[s] == len(made.starts[s])
        carry = windower.finish()  # the partition's new carry, as the next partition reads it
    return found, counts, gaps


def reference_gaps(frame, max_gap_ns):
    return int(sum((np.diff(rows["time"].to_numpy()) > max_gap_ns).sum() for _, rows in frame.groupby("entity")))


@pytest.mark.parametrize("w, max_gap", [(5, "2h"), (3, "90min"), (4, "1d"), (5, None), (2, "1h")])
@pytest.mark.parametrize("chunk, partition_hours", [(None, None), (7, None), (1, 24), (13, 6), (None, 24 * 7)])
def test_windows_equal_the_whole_series_reference_however_chunked_and_partitioned(w, max_gap, chunk, partition_hours):
    frame = irregular_series()
    strides = [1, 3, 5]
    found, counts, gaps = run_windower(frame, w, strides, max_gap, chunk, partition_hours)
    gap_ns = parse_duration("max_gap", max_gap)
    for s in strides:
        kept, ref = reference(frame, w, s, gap_ns)
        assert found[s].keys() == kept.keys()
        for key, values in kept.items():
            np.testing.assert_array_equal(found[s][key], values)
        assert counts[s]["candidates"] == counts[s]["expected"] == ref["candidates"]  # the closed form still holds
        assert counts[s]["mixed"] == ref["mixed"] and counts[s]["gap"] == ref["gap"]
    if max_gap is not None:
        assert gaps == reference_gaps(frame, gap_ns)
        assert sum(c["gap"] for c in counts.values()) > 0  # the data has gaps: the test means something
    else:
        assert gaps == 0 and all(c["gap"] == 0 for c in counts.values())


def test_max_gap_only_removes_windows_and_never_moves_the_others():
    frame = irregular_series(seed=3)
    without, _, _ = run_windower(frame, 5, [1, 3], None)
    for max_gap in ["30d", "6h", "2h", "1h"]:
        with_gap, counts, _ = run_windower(frame, 5, [1, 3], max_gap, chunk=11, partition_hours=24)
        for s in (1, 3):
            assert with_gap[s].keys() <= without[s].keys()
            assert len(without[s]) - len(with_gap[s]) == counts[s]["gap"]


def test_a_step_of_exactly_max_gap_is_not_a_gap():
    time = np.array([0, 1, 2, 4, 5, 6], dtype=np.int64) * HOUR  # one step of 2 h
    rows = ChunkRows(
        features=np.arange(12, dtype=np.float32).reshape(6, 2),
        entity=np.full(6, None, dtype=object),
        time=time,
        split=np.zeros(6, np.int8),
    )
    exact = Windower(3, [1], max_gap="2h").add(rows, NUMPY)
    assert exact.gaps == 0 and exact.gap_dropped[1] == 0 and len(exact.starts[1]) == 4
    shorter = Windower(3, [1], max_gap="119min").add(rows, NUMPY)
    assert shorter.gaps == 1 and shorter.gap_dropped[1] == 2 and list(shorter.end_row[1]) == [2, 5]


def test_a_gap_between_partitions_is_seen_through_the_carry():
    time = np.array([0, 1, 2, 50, 51, 52], dtype=np.int64) * HOUR
    first = ChunkRows(np.ones((3, 1), np.float32), np.array(["a"] * 3, dtype=object), time[:3], np.zeros(3, np.int8))
    second = ChunkRows(np.ones((3, 1), np.float32), np.array(["a"] * 3, dtype=object), time[3:], np.zeros(3, np.int8))
    windower = Windower(3, [1], max_gap="1d")
    assert len(windower.add(first, NUMPY).starts[1]) == 1
    later = Windower(3, [1], windower.finish(), max_gap="1d").add(second, NUMPY)
    assert later.gaps == 1 and later.gap_dropped[1] == 2 and list(later.end_row[1]) == [2]


def test_window_of_one_row_spans_no_gap():
    time = np.array([0, 100, 200], dtype=np.int64) * HOUR
    rows = ChunkRows(np.ones((3, 1)), np.full(3, None, dtype=object), time, np.zeros(3, np.int8))
    made = Windower(1, [1, 2], max_gap="1h").add(rows, NUMPY)
    assert len(made.starts[1]) == 3 and len(made.starts[2]) == 2 and made.gap_dropped == {1: 0, 2: 0}


@pytest.mark.parametrize("value", ["soon", "", "-2h", "0s", True, "NaT"])
def test_bad_durations_raise_naming_the_setting_and_value(value):
    with pytest.raises(ValueError, match="max_gap") as error:
        parse_duration("max_gap", value)
    assert repr(value) in str(error.value)
    with pytest.raises(ValueError, match="max_gap"):
        Windower(3, [1], max_gap=value)


@pytest.mark.parametrize("text, hours", [("2h", 2), ("1d", 24), ("90min", 1.5), (pd.Timedelta("3h"), 3)])
def test_durations_parse_with_pandas(text, hours):
    assert parse_duration("max_gap", text) == int(hours * HOUR)
    assert parse_duration("max_gap", None) is None


# split blocks ---------------------------------------------------------------------------------------------------------


def test_one_day_blocks_are_the_partition_dates():
    times = pd.Series(pd.date_range("2025-12-30 00:30", "2026-01-03 23:30", freq="57min", tz="UTC"))
    assert list(split_block_keys(times, "1d")) == list(times.dt.strftime("%Y-%m-%d"))


def test_seven_day_blocks_are_iso_weeks_keyed_by_their_monday():
    times = pd.Series(pd.date_range("1969-12-01", "2026-03-01", freq="29h", tz="UTC"))
    monday = times.dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time.dt.strftime("%Y-%m-%d")
    assert list(split_block_keys(times, "7d")) == list(monday)
    assert (pd.to_datetime(pd.Series(split_block_keys(times, "7d"))).dt.dayofweek == 0).all()


def test_sub_day_blocks_are_keyed_by_their_start_time_and_naive_times_are_utc():
    naive = pd.Series(pd.to_datetime(["2026-01-05 05:59:59", "2026-01-05 06:00:00", "2026-01-05 23:00:00"]))
    keys = split_block_keys(naive, "6h")
    assert list(keys) == ["2026-01-05T00:00:00", "2026-01-05T06:00:00", "2026-01-05T18:00:00"]
    assert list(split_block_keys(naive.dt.tz_localize("UTC"), "6h")) == list(keys)
    assert list(split_block_keys(naive.dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"), "6h")) == list(keys)
    ns = naive.dt.tz_localize("UTC").astype("int64").to_numpy()
    assert list(split_block_keys(ns, "6h")) == list(keys)
    arrow = pd.Series(naive.dt.tz_localize("UTC").dt.as_unit("us").array, dtype="timestamp[us, tz=UTC][pyarrow]")
    assert list(split_block_keys(arrow, "6h")) == list(keys)  # Arrow-backed frames (frame_from_arrow)


def test_block_keys_do_not_depend_on_how_rows_are_cut():
    times = pd.Series(pd.date_range("2026-01-01", periods=2000, freq="37min", tz="UTC"))
    whole = split_block_keys(times, "7d")
    pieces = np.concatenate([split_block_keys(times.iloc[i : i + 123], "7d") for i in range(0, len(times), 123)])
    assert list(whole) == list(pieces)
    assert len(split_block_keys(times.iloc[:0], "7d")) == 0
    index = split_block_index(times, "7d")
    assert (np.diff(index) >= 0).all() and index[0] == (times[0] - pd.Timestamp("1970-01-05", tz="UTC")).days // 7


@pytest.mark.parametrize("value", ["week", "-7d", "0d", None])
def test_bad_blocks_raise_naming_split_block(value):
    with pytest.raises(ValueError, match="split_block"):
        split_block_keys(pd.Series(pd.to_datetime(["2026-01-01"], utc=True)), value)


def test_null_times_raise():
    with pytest.raises(ValueError, match="nulls"):
        split_block_keys(pd.Series(pd.to_datetime(["2026-01-01", None], utc=True)), "7d")
