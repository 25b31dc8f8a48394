"""Duplicate keys, NULL entities and non-finite values, checked while a partition streams in chunks."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from emberharmony_core.features.row_checks import (
    BadRowsError,
    RowChecker,
    group_intact_chunks,
    group_starts,
    resolve_duplicates,
    value_limit,
)

KEYS = ["entity", "ts"]
FEATURES = ["x", "n"]
T0 = pd.Timestamp("2026-01-02", tz="UTC")


def hours(*h):
    return [T0 + pd.Timedelta(hours=v) for v in h]


def frame_with_duplicates() -> pd.DataFrame:
    """Sorted by (entity, ts); runs of 1, 2, 3 and 4 equal keys, one at the very end."""
    entity = ["a"] * 6 + ["b"] * 5 + ["c"] * 5
    ts = hours(0, 1, 1, 2, 3, 3) + hours(0, 0, 0, 1, 2) + hours(0, 1, 1, 1, 1)
    x = [0.1, 0.2, 0.3, 0.4, np.nan, np.nan, 1e16, 1.0, -1e16, 2.0, 3.0, 5.0, 0.1, 0.2, 0.3, np.nan]
    n = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    site = ["n"] * 6 + ["s"] * 5 + ["e"] * 5
    return pd.DataFrame(
        {
            "entity": entity,
            "ts": pd.Series(ts, dtype="datetime64[ns, UTC]"),
            "x": x,
            "n": np.array(n, dtype=np.int64),
            "site": site,
        }
    )


def chunked(frame: pd.DataFrame, size: int):
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size].reset_index(drop=True)


def assert_runs_intact(chunks: list[pd.DataFrame]):
    for before, after in pairwise(chunks):
        assert tuple(before[KEYS].iloc[-1]) != tuple(after[KEYS].iloc[0])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_group_intact_chunks_keep_every_row_in_order_and_never_split_a_run(size):
    frame = frame_with_duplicates()
    chunks = list(group_intact_chunks(chunked(frame, size), KEYS))
    assert all(len(c) for c in chunks)
    assert_runs_intact(chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), frame)


def test_group_intact_chunks_of_no_rows_give_the_empty_frame():
    empty = frame_with_duplicates().iloc[:0]
    (out,) = list(group_intact_chunks([empty], KEYS))
    assert list(out.columns) == list(empty.columns) and len(out) == 0
    assert list(group_intact_chunks([], KEYS)) == []


@pytest.mark.parametrize("policy", ["keep_last", "mean"])
def test_chunk_sizes_1_2_3_7_give_identical_output(policy):
    frame = frame_with_duplicates()
    outputs = []
    for size in (1, 2, 3, 7):
        checker = RowChecker("2026-01-02", "ts", "entity", FEATURES, on_duplicate=policy)
        chunks = list(checker.check(chunked(frame, size)))
        assert_runs_intact(chunks)
        outputs.append(pd.concat(chunks, ignore_index=True))
        assert checker.metadata()["duplicate_keys"] == 4
        assert checker.rows_in == 16 and checker.rows_out == 9
    for other in outputs[1:]:
        pd.testing.assert_frame_equal(other, outputs[0], check_exact=True)
    out = outputs[0]
    assert group_starts(out, KEYS).all()  # one row per key
    assert len(out) == 9


def test_keep_last_keeps_the_last_row_of_each_key_in_source_order():
    out, found = resolve_duplicates(frame_with_duplicates(), KEYS, "keep_last", FEATURES)
    assert (found.keys, found.extra_rows) == (4, 7)
    assert out["n"].tolist() == [1, 3, 4, 6, 9, 10, 11, 12, 16]
    assert out["n"].dtype == np.int64  # keep_last does not change types


def test_mean_averages_numeric_features_ignoring_nulls_independent_of_row_order():
    frame = frame_with_duplicates()
    out, _ = resolve_duplicates(frame, KEYS, "mean", FEATURES)
    assert out["x"].dtype == np.float64 and out["n"].dtype == np.float64
    x = out["x"].to_numpy()
    np.testing.assert_allclose(x[[0, 1, 2, 5, 6, 7]], [0.1, 0.25, 0.4, 2.0, 3.0, 5.0])
    assert np.isnan(x[3])  # (a, 3h): both NULL
    np.testing.assert_allclose(x[8], 0.2)  # (c, 1h): 0.1, 0.2, 0.3 and a NULL
    assert out["n"].tolist()[:2] == [1.0, 2.5]
    # every permutation of the rows within each key gives bit-identical means
    rng = np.random.default_rng(0)
    for _ in range(20):
        group = np.cumsum(group_starts(frame, KEYS))
        shuffled = frame.iloc[np.lexsort((rng.random(len(frame)), group))].reset_index(drop=True)
        again, _ = resolve_duplicates(shuffled, KEYS, "mean", FEATURES)
        pd.testing.assert_frame_equal(again, out, check_exact=True)


def test_mean_requires_other_columns_to_agree_and_names_column_and_key():
    frame = frame_with_duplicates()
    frame.loc[2, "site"] = "w"  # (a, 1h) rows disagree
    with pytest.raises(BadRowsError) as info:
        list(RowChecker("2026-01-02", "ts", "entity", FEATURES, on_duplicate="mean").check(chunked(frame, 2)))
    message = str(info.value)
    assert "partition 2026-01-02" in message and "'site'" in message and "'n' vs 'w'" in message
    assert "('a', 2026-01-02T01:00:00+00:00)" in message and "keep_last" in message


def test_on_duplicate_error_counts_every_duplicate_names_examples_and_the_setting():
    checker = RowChecker("2026-01-02", "ts", "entity", FEATURES)
    seen = []
    with pytest.raises(BadRowsError) as info:
        for chunk in checker.check(chunked(frame_with_duplicates(), 3)):
            seen.append(chunk)
    message = str(info.value)
    assert "partition 2026-01-02" in message
    assert "4 (entity, ts) keys occur more than once (7 extra rows)" in message
    assert "('a', 2026-01-02T01:00:00+00:00) x2" in message and "('b', 2026-01-02T00:00:00+00:00) x3" in message
    assert "settings.on_duplicate" in message and "'keep_last'" in message and "'mean'" in message
    assert all(group_starts(c, KEYS).all() for c in seen)  # no chunk holding a duplicate was handed on


def test_without_an_entity_column_the_key_is_the_timestamp():
    frame = pd.DataFrame({"ts": pd.Series(hours(0, 1, 1, 2), dtype="datetime64[ns, UTC]"), "x": [1.0, 2.0, 4.0, 5.0]})
    out = pd.concat(RowChecker("d", "ts", None, ["x"], on_duplicate="mean").check(chunked(frame, 1)))
    assert out["x"].tolist() == [1.0, 3.0, 5.0]
    with pytest.raises(BadRowsError, match=r"1 \(ts\) keys occur more than once \(1 extra rows\)"):
        list(RowChecker("d", "ts", None, ["x"]).check(chunked(frame, 1)))


def test_null_entities_fail_naming_count_and_column():
    frame = frame_with_duplicates().drop_duplicates(KEYS).reset_index(drop=True)
    frame.loc[len(frame) - 2 :, "entity"] = None  # NULLS LAST: the last two rows
    with pytest.raises(BadRowsError) as info:
        list(RowChecker("2026-01-02", "ts", "entity", FEATURES).check(chunked(frame, 3)))
    message = str(info.value)
    assert "partition 2026-01-02" in message and "2 rows have a NULL entity id in column 'entity'" in message
    assert "cannot be placed in any series" in message and "duplicate" not in message


@pytest.mark.parametrize(
    "dtype, bad",
    [("float32", np.inf), ("float32", -np.inf), ("float32", 1e39), ("float64", np.inf), ("float64", 1e200)],
)
def test_non_finite_or_overflowing_values_fail_naming_column_partition_count_and_example(dtype, bad):
    frame = frame_with_duplicates().drop_duplicates(KEYS).reset_index(drop=True)
    frame.loc[[3, 7], "x"] = bad
    seen = []
    with pytest.raises(BadRowsError) as info:
        for chunk in RowChecker("2026-01-02", "ts", "entity", FEATURES, dtype=dtype).check(chunked(frame, 2)):
            seen.append(chunk)
    message = str(info.value)
    assert "partition 2026-01-02" in message and "column 'x' has 2 non-finite or out-of-range values" in message
    assert f"first: {bad!r} at entity='a', ts=2026-01-02T03:00:00+00:00" in message
    assert f"settings.dtype {dtype}" in message
    assert sum(len(c) for c in seen) < 4


def test_nan_and_values_within_range_are_allowed():
    frame = frame_with_duplicates().drop_duplicates(KEYS).reset_index(drop=True)
    frame.loc[1, "x"] = 3e38  # within float32
    out = pd.concat(RowChecker("d", "ts", "entity", FEATURES).check(chunked(frame, 4)), ignore_index=True)
    pd.testing.assert_frame_equal(out, frame)
    assert value_limit("float32") == float(np.finfo(np.float32).max)
    with pytest.raises(BadRowsError, match="within \\+-1.34e\\+154"):
        frame.loc[1, "x"] = 1e155
        list(RowChecker("d", "ts", "entity", FEATURES, dtype="float64").check([frame]))


def test_every_problem_of_a_partition_in_one_message():
    frame = frame_with_duplicates()
    frame.loc[0, "x"] = np.inf
    frame.loc[15, "entity"] = None
    with pytest.raises(BadRowsError) as info:
        list(RowChecker("2026-01-02", "ts", "entity", FEATURES).check(chunked(frame, 5)))
    message = str(info.value)
    assert "1 rows have a NULL entity id" in message and "column 'x' has 1 non-finite" in message
    assert "keys occur more than once" in message


def test_bad_on_duplicate_is_refused():
    with pytest.raises(ValueError, match="on_duplicate must be one of 'error', 'keep_last', 'mean', got 'first'"):
        RowChecker("d", "ts", on_duplicate="first")


@pytest.mark.parametrize("dtype", ["object", "string", "string[pyarrow]", "large_string[pyarrow]", "category"])
def test_entity_columns_of_any_pandas_string_type(dtype):
    frame = frame_with_duplicates()
    frame["entity"] = frame["entity"].astype(dtype)
    expected = pd.concat(
        RowChecker("d", "ts", "entity", FEATURES, on_duplicate="keep_last").check(chunked(frame_with_duplicates(), 4)),
        ignore_index=True,
    )
    out = pd.concat(
        RowChecker("d", "ts", "entity", FEATURES, on_duplicate="keep_last").check(chunked(frame, 4)), ignore_index=True
    )
    assert out["n"].tolist() == expected["n"].tolist()
    frame = frame.drop_duplicates(KEYS).reset_index(drop=True)
    frame.loc[8, "entity"] = None
    with pytest.raises(BadRowsError, match="1 rows have a NULL entity id"):
        list(RowChecker("d", "ts", "entity", FEATURES).check(chunked(frame, 4)))


def test_unique_keys_pass_through_without_copies():
    frame = frame_with_duplicates().drop_duplicates(KEYS).reset_index(drop=True)
    chunks = list(chunked(frame, 3))
    out = list(group_intact_chunks(iter(chunks), KEYS))
    assert all(a is b for a, b in zip(out, chunks, strict=True)) and len(out) == len(chunks)


def test_train_values_within_the_float64_limit_whose_variance_still_overflows_are_named():
    """The ingest check lets +-1e154 through under float64 (its square is finite); their spread is not:
    the statistics name the column instead of failing later with 'Out of range float values are not JSON compliant'."""
    from emberharmony_core.features.preprocess import PreprocessConfig, PreprocessError, compute_partition_stats

    frame = pd.DataFrame({"x": [1e154, -1e154, 1.3e154], "ok": [1.0, 2.0, 3.0]})
    list(RowChecker("d", "ts", None, ["x"], dtype="float64").check([frame.assign(ts=hours(0, 1, 2))]))
    with pytest.raises(PreprocessError, match="numeric column 'x': the mean or variance of its train values overflows"):
        compute_partition_stats(frame, PreprocessConfig(split_column=None))
