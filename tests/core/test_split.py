"""Hash split: MOD(ABS(FARM_FINGERPRINT(CAST(key AS STRING))), 100), bit for bit as BigQuery computes it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import farmhash  # pyfarmhash, a core dependency: missing must fail, not skip
import numpy as np
import pandas as pd
import pytest

from emberharmony_core.features import assign_split, split_bucket, validate_fractions
from emberharmony_core.features import split as split_module
from emberharmony_core.features.split import farm_fingerprint, split_sql_expression, split_thresholds

# Published FARM_FINGERPRINT / Fingerprint64 values (signed INT64, as BigQuery and Java print them).
DOCUMENTED = {
    # BigQuery "Hash functions" page: FARM_FINGERPRINT(CONCAT(CAST(x AS STRING), y, CAST(z AS STRING)))
    # for (1, "foo", true), (2, "apple", false), (3, "", true).
    "1footrue": -1541654101129638711,
    "2applefalse": 2794438866806483259,
    "3true": -4880158226897771312,
    # Guava FarmHashFingerprint64Test.testReallySimpleFingerprints ("test", 32 and 256 characters long).
    "test": 8581389452482819506,
    "test" * 8: -4196240717365766262,
    "test" * 64: 3500507768004279527,
    # Amazon Redshift farmFingerprint64 documentation example.
    "Amazon Redshift": 8085098817162212970,
}


def signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def bigquery_bucket(signed_fingerprint: int) -> int:
    """MOD(ABS(x), 100) with Python's unbounded ints (no overflow, no sign games)."""
    return abs(signed_fingerprint) % 100


@pytest.mark.parametrize("text, expected", DOCUMENTED.items(), ids=[k[:16] for k in DOCUMENTED])
def test_documented_fingerprints(text, expected):
    assert signed(farmhash.fingerprint64(text)) == expected  # pyfarmhash gives the unsigned 64 bits
    assert farm_fingerprint([text])[0] == expected
    assert farm_fingerprint([text.encode("utf-8")])[0] == expected
    assert split_bucket([text])[0] == bigquery_bucket(expected)


def test_bigquery_doc_example_through_cast_rules():
    # CONCAT(CAST(x AS STRING), y, CAST(z AS STRING)) built from our CAST rules for int and bool
    rows = [(1, "foo", True), (2, "apple", False), (3, "", True)]
    for (x, y, z), expected in zip(
        rows, [-1541654101129638711, 2794438866806483259, -4880158226897771312], strict=True
    ):
        text = split_module._cast_to_string(pd.Index([x]))[0] + y + split_module._cast_to_string(np.array([z]))[0]
        assert farm_fingerprint([text])[0] == expected


def test_fingerprint64_matches_guava_reference_over_all_lengths():
    """Port of Guava's FarmHashFingerprint64Test.testMultipleLengths (checked there against the C++ code).

    It hashes buffers of every length up to 3200 bytes, so every length branch of
    Fingerprint64 is exercised; Java's signed longs are the same 64 bits mod 2**64.
    """
    mask = (1 << 64) - 1
    buf = bytearray(800 * 4)
    buf_len, h = 0, 0

    def remix(value: int) -> int:
        value ^= value >> 41
        return (value * 949921979) & mask

    def get_char(value: int) -> int:
        return ord("a") + (value & 0xFFFFF) % 26

    def fingerprint(length: int) -> int:
        return farmhash.fingerprint64(bytes(buf[:length]))

    for i in range(800):
        h = remix(h ^ fingerprint(i))
        buf[buf_len] = get_char(h)
        buf_len += 1
        h = remix(h ^ fingerprint(i * i % buf_len))
        buf[buf_len] = get_char(h)
        buf_len += 1
        h = remix(h ^ fingerprint(i * i * i % buf_len))
        buf[buf_len] = get_char(h)
        buf_len += 1
        h = remix(h ^ fingerprint(buf_len))
        buf[buf_len] = get_char(h)
        buf_len += 1
        x0, x1, x2, x3 = buf[buf_len - 1], buf[buf_len - 2], buf[buf_len - 3], buf[buf_len // 2]
        buf[((x0 << 16) + (x1 << 8) + x2) % buf_len] ^= x3
        buf[((x1 << 16) + (x2 << 8) + x3) % buf_len] ^= i % 256
    assert h == 0x7A1D67C50EC7E167


def test_signedness_and_abs_on_many_keys():
    keys = [f"user-{i}" for i in range(5000)] + ["", "é", "日本語", "a" * 1000]
    signed_values = [signed(farmhash.fingerprint64(k)) for k in keys]
    assert min(signed_values) < 0 < max(signed_values)
    np.testing.assert_array_equal(farm_fingerprint(keys), signed_values)
    np.testing.assert_array_equal(split_bucket(keys), [bigquery_bucket(v) for v in signed_values])


def test_abs_overflow_is_an_error_as_in_bigquery(monkeypatch):
    monkeypatch.setattr(split_module, "_fingerprint64", lambda: lambda s: 1 << 63 if s == "boom" else 5)
    assert split_bucket(["fine"])[0] == 5
    with pytest.raises(OverflowError, match=r"'boom'.*int64 overflow"):
        split_bucket(["fine", "boom"])


def test_cast_to_string_rules():
    # integers hash as their decimal text, in every container
    as_text = split_bucket(["123", "-7", "0", "9223372036854775807"])
    for keys in (
        [123, -7, 0, 9223372036854775807],
        np.array([123, -7, 0, 9223372036854775807], dtype=np.int64),
        pd.Series([123, -7, 0, 9223372036854775807], dtype="Int64"),
        pd.Index([123, -7, 0, 9223372036854775807]),
    ):
        np.testing.assert_array_equal(split_bucket(keys), as_text)
    np.testing.assert_array_equal(split_bucket(np.array([5, 6], dtype=np.uint8)), split_bucket(["5", "6"]))
    # bools, dates, DATETIME and TIMESTAMP text
    np.testing.assert_array_equal(split_bucket([True, False]), split_bucket(["true", "false"]))
    date_text = split_bucket(["2024-01-01", "1999-12-31"])
    np.testing.assert_array_equal(split_bucket([dt.date(2024, 1, 1), dt.date(1999, 12, 31)]), date_text)
    days = np.array(["2024-01-01", "1999-12-31"], dtype="datetime64[D]")
    np.testing.assert_array_equal(split_bucket(days), date_text)
    stamps = ["2024-01-01 00:00:00", "2024-01-01 12:30:00.5", "2024-01-01 00:00:00.000001", "1969-12-31 23:59:59.123"]
    naive = pd.Series(pd.to_datetime(stamps, format="ISO8601"))
    datetime_text = [
        "2024-01-01 00:00:00",
        "2024-01-01 12:30:00.500",
        "2024-01-01 00:00:00.000001",
        "1969-12-31 23:59:59.123",
    ]
    assert split_module._cast_to_string(pd.DatetimeIndex(naive)) == datetime_text
    np.testing.assert_array_equal(split_bucket(naive), split_bucket(datetime_text))
    aware = naive.dt.tz_localize("UTC").dt.tz_convert("America/New_York")  # rendered in UTC, like BigQuery
    timestamp_text = [text + "+00" for text in datetime_text]
    assert split_module._cast_to_string(pd.DatetimeIndex(aware)) == timestamp_text
    np.testing.assert_array_equal(split_bucket(aware), split_bucket(timestamp_text))
    mixed = [pd.Timestamp("2024-01-01 01:00:00+01:00"), dt.datetime(2024, 1, 1, 5), dt.date(2020, 2, 2), 7, "x", b"y"]
    as_strings = ["2024-01-01 00:00:00+00", "2024-01-01 05:00:00", "2020-02-02", "7", "x", "y"]
    np.testing.assert_array_equal(split_bucket(mixed), split_bucket(as_strings))


def test_null_keys_bucket_minus_one_and_fall_to_test():
    keys = pd.Series([1, None, 3], dtype="Int64")
    buckets = split_bucket(keys)
    assert buckets[1] == -1 and buckets[0] >= 0 and buckets[2] >= 0
    assert assign_split(keys)[1] == "test"  # CASE WHEN NULL < 80 ... ELSE 'test'
    assert list(split_bucket(["a", None, np.nan, pd.NA])[1:]) == [-1, -1, -1]


def test_unsupported_keys_are_refused():
    with pytest.raises(TypeError, match="float split keys"):
        split_bucket(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="float split keys"):
        split_bucket(["a", 1.5])
    with pytest.raises(TypeError, match="unsupported split key type"):
        split_bucket(np.array([1, 2], dtype="timedelta64[s]"))
    with pytest.raises(TypeError, match="1-D"):
        split_bucket("just-a-string")


def test_default_fractions_within_one_percent_on_distinct_keys():
    keys = np.arange(10**9, 10**9 + 100_000)
    splits = assign_split(keys)
    assert splits.dtype == object and set(np.unique(splits)) == {"train", "validation", "test"}
    shares = {name: float(np.mean(splits == name)) for name in ("train", "validation", "test")}
    assert abs(shares["train"] - 0.8) < 0.01
    assert abs(shares["validation"] - 0.1) < 0.01
    assert abs(shares["test"] - 0.1) < 0.01
    buckets = split_bucket(keys)
    np.testing.assert_array_equal(splits, np.where(buckets < 80, "train", np.where(buckets < 90, "validation", "test")))


def test_custom_fraction_thresholds():
    assert split_thresholds() == (80, 90)
    assert split_thresholds((0.7, 0.2, 0.1)) == (70, 90)
    assert split_thresholds((0.6, 0.25, 0.15)) == (60, 85)
    assert split_thresholds((0.33, 0.33, 0.34)) == (33, 66)
    assert split_thresholds((1.0, 0.0, 0.0)) == (100, 100)
    assert split_thresholds((0, 0, 1)) == (0, 0)
    keys = [f"k{i}" for i in range(3000)]
    buckets = split_bucket(keys)
    splits = assign_split(keys, (0.6, 0.25, 0.15))
    assert (buckets[splits == "train"] < 60).all()
    assert ((buckets[splits == "validation"] >= 60) & (buckets[splits == "validation"] < 85)).all()
    assert (buckets[splits == "test"] >= 85).all()
    assert set(assign_split(keys, (1, 0, 0))) == {"train"}
    assert set(assign_split(keys, (0, 0, 1))) == {"test"}


@pytest.mark.parametrize(
    "fractions, message",
    [
        ((0.8, 0.2), r"3 numbers.*got 2"),
        ((0.5, 0.2, 0.2, 0.1), r"got 4"),
        (0.8, r"3 numbers"),
        ((0.9, -0.1, 0.2), r"validation fraction must not be negative, got -0.1"),
        ((0.8, 0.1, 0.2), r"sum to 1.*sum 1.1"),
        ((0.805, 0.1, 0.095), r"train fraction 0.805 is not a whole percent"),
        ((0.8, 0.1, float("nan")), r"test fraction must be a finite number, got nan"),
        ((0.8, "0.1", 0.1), r"validation fraction must be a finite number, got '0.1'"),
    ],
)
def test_validate_fractions_errors(fractions, message):
    with pytest.raises(ValueError, match=message):
        validate_fractions(fractions)
    with pytest.raises(ValueError, match=message):
        assign_split(["a"], fractions)


def test_validate_fractions_accepts_float_noise():
    assert validate_fractions((0.7, 0.2, 0.1)) == (0.7, 0.2, 0.1)  # 0.7 + 0.2 + 0.1 != 1.0 exactly in binary
    assert validate_fractions([0.07, 0.9, 0.03]) == (0.07, 0.9, 0.03)
    assert validate_fractions((np.float32(0.5), 0.25, 0.25)) == (0.5, 0.25, 0.25)


def test_sql_expression():
    assert split_sql_expression("`user_id`") == (
        "CASE WHEN MOD(ABS(FARM_FINGERPRINT(CAST(`user_id` AS STRING))), 100) < 80 THEN 'train' "
        "WHEN MOD(ABS(FARM_FINGERPRINT(CAST(`user_id` AS STRING))), 100) < 90 THEN 'validation' "
        "ELSE 'test' END"
    )
    sql = split_sql_expression("t.`k`", (0.6, 0.25, 0.15))
    assert "< 60 THEN 'train'" in sql and "< 85 THEN 'validation'" in sql
    with pytest.raises(ValueError, match="sum to 1"):
        split_sql_expression("k", (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="key_sql"):
        split_sql_expression("  ")


def test_same_key_same_split_across_calls_and_processes():
    keys = [f"entity-{i}" for i in range(200)] + list(range(200))
    here = assign_split(keys).tolist()
    assert assign_split(keys).tolist() == here
    assert assign_split(list(reversed(keys))).tolist() == list(reversed(here))  # per key, not per position
    script = textwrap.dedent(
        """
        import json, sys
        from emberharmony_core.features import assign_split, split_bucket
        keys = json.loads(sys.stdin.read())
        print(json.dumps([assign_split(keys).tolist(), split_bucket(keys).tolist()]))
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")  # Python's str hash differs; the split must not
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    other_splits, other_buckets = json.loads(result.stdout)
    assert other_splits == here
    assert other_buckets == split_bucket(keys).tolist()


def test_the_split_key_sample_is_exact_up_to_its_capacity_and_a_uniform_sample_beyond():
    """The split-fractions check's memory: at most ``capacity`` keys, whatever a backfill sees; below it every
    key (exact shares, exact count), above it a hash sample whose shares and count track the exact ones."""
    from emberharmony_core.features.split import SplitKeySample

    keys = np.array([f"user_{i}" for i in range(200_000)], dtype=object)
    splits = assign_split(keys)
    small = SplitKeySample(capacity=1_000)
    for part in np.array_split(np.arange(800), 7):  # chunks with repeated keys, in any order
        small.add(np.concatenate([keys[part], keys[part[::-1]]]), np.concatenate([splits[part], splits[part[::-1]]]))
    assert not small.sampled and small.distinct == 800
    assert sorted(zip(small.hashes.tolist(), small.splits.tolist(), strict=True)) == sorted(
        zip(pd.util.hash_array(keys[:800], hash_key="emberharmony-smp").tolist(), splits[:800].tolist(), strict=True)
    )

    sample = SplitKeySample(capacity=4_096)
    for part in np.array_split(np.random.default_rng(0).permutation(len(keys)), 50):
        sample.add(keys[part], splits[part])
        assert len(sample.hashes) <= 4_096
    assert sample.sampled and len(sample.splits) == 4_096
    assert abs(sample.distinct - 200_000) / 200_000 < 0.05  # relative standard error 1/64
    for name in ("train", "validation", "test"):
        exact, sampled = np.mean(splits == name), np.mean(sample.splits == name)
        assert abs(sampled - exact) < 4 * np.sqrt(exact * (1 - exact) / 4_096)
    # the same sample whatever the chunking and order
    again = SplitKeySample(capacity=4_096)
    again.add(keys[::-1], splits[::-1])
    np.testing.assert_array_equal(again.hashes, sample.hashes)
    assert again.splits.tolist() == sample.splits.tolist()
