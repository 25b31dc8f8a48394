"""Preprocessing: per-partition train statistics -> merged -> fitted -> applied per partition.

Parity targets (on data that fits in memory): scikit-learn SimpleImputer(median) +
StandardScaler, pandas.get_dummies, pandas.json_normalize.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest

from emberharmony_core.features.preprocess import (
    ConfigMismatchError,
    FittedPreprocessor,
    MedianSketch,
    MissingColumnError,
    PreprocessConfig,
    PreprocessError,
    PreprocessStats,
    StructFieldsError,
    compute_partition_stats,
    detect_column_types,
    fit_preprocessor,
    flatten_struct_columns,
    merge_stats,
)

sklearn = pytest.importorskip("sklearn")
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

CFG = PreprocessConfig(exclude_columns=("ts", "entity"), force_categorical_columns=("store",))
NUMERIC = ["amount", "flag", "meta_score", "temp"]
CATEGORICAL = ["color", "meta_kind", "store"]


def make_frame(n=3000, seed=0, start=0):
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, n)
    amount[rng.random(n) < 0.1] = np.nan
    temp = rng.normal(20.0, 5.0, n).round(1)  # few distinct values: exact median
    temp[rng.random(n) < 0.05] = np.nan
    meta = [
        {"score": float(rng.normal()), "kind": str(rng.choice(["a", "b", "c"]))} if rng.random() > 0.1 else None
        for _ in range(n)
    ]
    return pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=n, freq="min") + pd.Timedelta(minutes=start),
            "entity": rng.integers(0, 50, n),
            "split": rng.choice(["train", "validation", "test"], n, p=[0.8, 0.1, 0.1]),
            "amount": amount,
            "temp": temp,
            "flag": rng.random(n) < 0.3,
            "color": pd.Series(rng.choice(["red", "green", "blue", "teal"], n), dtype=object).where(
                rng.random(n) > 0.2, None
            ),
            "store": rng.integers(1, 13, n),
            "meta": meta,
            "label": rng.integers(0, 2, n),
        }
    )


@pytest.fixture(scope="module")
def frame():
    return make_frame()


@pytest.fixture(scope="module")
def parts(frame):
    return [frame.iloc[:1000], frame.iloc[1000:1800], frame.iloc[1800:]]


@pytest.fixture(scope="module")
def fitted(parts):
    return fit_preprocessor(merge_stats(compute_partition_stats(p, CFG) for p in parts), CFG)


def _train_flat(frame):
    train = frame[frame["split"] == "train"]
    meta = pd.json_normalize([v if isinstance(v, dict) else {} for v in train["meta"]]).add_prefix("meta_")
    meta.index = train.index
    return pd.concat([train.drop(columns="meta"), meta], axis=1)


# --------------------------------------------------------------------------- parity


def test_roles_and_layout(frame, fitted):
    roles = detect_column_types(frame, CFG)
    assert roles["numeric"] == ["amount", "temp"]
    assert roles["boolean"] == ["flag"]
    assert roles["categorical"] == ["color", "store"]
    assert roles["struct"] == ["meta"]
    assert roles["target"] == ["label"]
    assert roles["excluded"] == ["ts", "entity", "split"]
    assert fitted.target_ == "label"
    assert fitted.numeric_columns_ == NUMERIC
    assert list(fitted.categories_) == CATEGORICAL
    assert "label" not in fitted.feature_names_


def test_sklearn_imputer_scaler_parity(frame, fitted):
    train = _train_flat(frame)[NUMERIC].astype(np.float64)
    imputer = SimpleImputer(strategy="median").fit(train)
    scaler = StandardScaler().fit(imputer.transform(train))
    np.testing.assert_array_equal(fitted.statistics_, imputer.statistics_)  # exact medians here
    np.testing.assert_allclose(fitted.mean_, scaler.mean_, rtol=1e-9)
    np.testing.assert_allclose(fitted.var_, scaler.var_, rtol=1e-9)
    np.testing.assert_allclose(fitted.scale_, scaler.scale_, rtol=1e-9)
    assert fitted.n_samples_seen_ == scaler.n_samples_seen_

    X, names = fitted.transform(frame)
    assert X.dtype == np.float32 and X.shape == (len(frame), len(names))
    everything = fitted.flatten(frame)[NUMERIC].astype(np.float64)
    expected = scaler.transform(imputer.transform(everything))
    np.testing.assert_allclose(X[:, : len(NUMERIC)], expected, rtol=1e-6, atol=1e-6)

    # the exported scikit-learn objects reproduce our numeric block
    ours_imp, ours_scaler = fitted.to_sklearn()
    assert list(ours_imp.feature_names_in_) == NUMERIC
    got = ours_scaler.transform(ours_imp.transform(everything))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_get_dummies_parity(frame, fitted):
    train = _train_flat(frame)
    dummies = pd.get_dummies(train[CATEGORICAL], columns=CATEGORICAL, dtype=np.float32)
    X, names = fitted.transform(frame[frame["split"] == "train"])
    onehot = pd.DataFrame(X[:, len(NUMERIC) :], columns=names[len(NUMERIC) :], index=train.index)
    assert list(onehot.columns) == list(dummies.columns)  # set and order (numeric store codes sort as numbers)
    pd.testing.assert_frame_equal(onehot, dummies)

    # other splits: vocabulary fixed on train, missing categories zeros, unseen ones all zeros
    other = frame[frame["split"] != "train"].copy()
    other["color"] = other["color"].replace({"teal": "purple"})  # "purple" never seen in train
    flat_other = fitted.flatten(other)
    expected = (
        pd.get_dummies(flat_other[CATEGORICAL], columns=CATEGORICAL, dtype=np.float32)
        .reindex(columns=dummies.columns, fill_value=0.0)
        .astype(np.float32)
    )
    X, _ = fitted.transform(other)
    got = pd.DataFrame(X[:, len(NUMERIC) :], columns=dummies.columns, index=other.index)
    pd.testing.assert_frame_equal(got, expected)
    assert not got.loc[other["color"] == "purple", [c for c in got if c.startswith("color_")]].to_numpy().any()


def test_struct_flattening_matches_json_normalize():
    rows = [
        {"a": 1, "b": {"c": "x", "d": 2.5}},
        None,
        {"a": 3, "b": {"c": "y", "d": None}},
        {"a": None, "b": {"c": None, "d": 1.0}},
    ]
    df = pd.DataFrame({"k": range(4), "s": rows})
    flat, fields = flatten_struct_columns(df, ["s"])
    expected = pd.json_normalize([r or {} for r in rows]).add_prefix("s_")
    assert list(flat.columns) == ["k"] + list(expected.columns)
    pd.testing.assert_frame_equal(flat[expected.columns].reset_index(drop=True), expected, check_dtype=False)
    assert fields == {"s": ["a", "b.c", "b.d"]}

    import pyarrow as pa

    arrow = pd.DataFrame({"k": range(4), "s": pd.Series(pa.array(rows), dtype=pd.ArrowDtype(pa.array(rows).type))})
    flat_a, fields_a = flatten_struct_columns(arrow, ["s"])
    assert fields_a == fields
    assert sorted(flat_a.columns) == sorted(flat.columns)
    for col in expected.columns:
        left = flat_a[col].astype(object).where(flat_a[col].notna(), None).tolist()
        right = flat[col].astype(object).where(flat[col].notna(), None).tolist()
        assert left == right, col


# --------------------------------------------------------------------------- merging


def _assert_fitted_equal(a: FittedPreprocessor, b: FittedPreprocessor, rtol=1e-12):
    da, db = a.to_dict(), b.to_dict()
    for key in ("statistics_", "mean_", "var_", "scale_"):
        np.testing.assert_allclose(da.pop(key), db.pop(key), rtol=rtol, atol=0)
    ca, cb = da.pop("columns_"), db.pop("columns_")
    assert da == db
    for ra, rb in zip(ca, cb, strict=True):
        for k in ra:
            if isinstance(ra[k], float):
                assert ra[k] == pytest.approx(rb[k], rel=rtol), (ra["column"], k)
            else:
                assert ra[k] == rb[k], (ra["column"], k)


def test_three_partitions_equal_concatenated(frame, parts, fitted):
    whole = fit_preprocessor(compute_partition_stats(frame, CFG), CFG)
    _assert_fitted_equal(fitted, whole)
    # exact parts (counts, categories, sketches) are bit-identical
    merged = merge_stats(compute_partition_stats(p, CFG) for p in parts)
    single = compute_partition_stats(frame, CFG)
    for col, st in single.columns.items():
        assert merged.columns[col].n_rows == st.n_rows and merged.columns[col].null_count == st.null_count
        assert merged.columns[col].categories == st.categories
        assert merged.columns[col].sketch == st.sketch


def test_merge_order_does_not_matter(parts):
    stats = [compute_partition_stats(p, CFG) for p in parts]
    reference = fit_preprocessor(merge_stats(stats), CFG).to_json()
    for perm in itertools.permutations(stats):
        assert fit_preprocessor(merge_stats(perm), CFG).to_json() == reference  # bit-identical
    a, b, c = stats
    _assert_fitted_equal(fit_preprocessor(c.merge(a).merge(b), CFG), fit_preprocessor(a.merge(b.merge(c)), CFG))


def test_validation_and_test_rows_never_contribute(frame):
    changed = frame.copy()
    other = changed["split"] != "train"
    changed.loc[other, "amount"] = 1e6
    changed.loc[other, "color"] = "never-in-train"
    changed.loc[other, "store"] = 99
    changed.loc[other, "meta"] = [{"score": 1e9, "kind": "zzz"}] * int(other.sum())
    assert compute_partition_stats(changed, CFG).to_json() == compute_partition_stats(frame, CFG).to_json()


def test_json_round_trip(parts, fitted, frame):
    stats = merge_stats(compute_partition_stats(p, CFG) for p in parts)
    text = stats.to_json()
    json.loads(text)  # plain JSON, no NaN
    assert PreprocessStats.from_json(text).to_json() == text
    again = FittedPreprocessor.from_json(fitted.to_json())
    assert again.to_json() == fitted.to_json()
    np.testing.assert_array_equal(again.transform(frame)[0], fitted.transform(frame)[0])


def test_empty_partition_merges(frame):
    empty = frame[frame["split"] == "nope"]
    merged = merge_stats([compute_partition_stats(frame, CFG), compute_partition_stats(empty, CFG)])
    _assert_fitted_equal(fit_preprocessor(merged, CFG), fit_preprocessor(compute_partition_stats(frame, CFG), CFG))


# --------------------------------------------------------------------------- medians


def test_exact_median_matches_numpy():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 10):
        x = rng.integers(0, 5, n).astype(float)
        assert MedianSketch.from_values(x).median() == np.median(x)
    s = MedianSketch.from_values([1.0, 2.0]).merge(MedianSketch.from_values([3.0, 4.0, 4.0]))
    assert s.exact and s.median() == 3.0 and s.error_bound() == 0.0
    assert np.isnan(MedianSketch().median())


def test_sketch_median_error_on_1m_values_over_10_partitions():
    """Bucket mode: stated bound |m_hat - m| <= alpha * (|lo| + |hi|) / 2; measured here."""
    rng = np.random.default_rng(7)
    alpha = 1e-4
    chunks = [rng.lognormal(2.0, 1.5, 100_000) for _ in range(5)] + [rng.normal(30.0, 10.0, 100_000) for _ in range(5)]
    sketches = [MedianSketch.from_values(c, alpha=alpha, max_exact=10_000) for c in chunks]
    merged = sketches[0]
    for s in sketches[1:]:
        merged = merged.merge(s)
    assert not merged.exact and merged.count == 1_000_000
    allx = np.sort(np.concatenate(chunks))
    true = np.median(allx)
    est = merged.median()
    rel = abs(est - true) / abs(true)
    assert rel <= alpha
    assert abs(est - true) <= merged.error_bound()
    rank = np.searchsorted(allx, est) / len(allx)
    print(f"median true={true:.9g} est={est:.9g} rel_err={rel:.2e} rank={rank:.6f} buckets_bytes={merged.nbytes()}")
    assert abs(rank - 0.5) < 1e-3
    # order independence and partitioning independence are exact (integer counts)
    assert sketches[9].merge(sketches[3]).merge(sketches[0]) == sketches[0].merge(sketches[3].merge(sketches[9]))
    whole = MedianSketch.from_values(np.concatenate(chunks[:3]), alpha=alpha, max_exact=10_000)
    assert whole == sketches[0].merge(sketches[1]).merge(sketches[2])


def test_exact_to_bucket_switch_is_order_independent():
    rng = np.random.default_rng(3)
    a, b, c = (rng.integers(0, 4000, 3000).astype(float) for _ in range(3))
    sk = [MedianSketch.from_values(x, max_exact=3000) for x in (a, b, c)]
    assert all(s.exact for s in sk)
    one = sk[0].merge(sk[1]).merge(sk[2])
    two = sk[2].merge(sk[0].merge(sk[1]))
    assert one == two and not one.exact
    assert one == MedianSketch.from_values(np.concatenate([a, b, c]), max_exact=3000)


# --------------------------------------------------------------------------- decisions and errors


def test_missing_target_and_forced_categorical_raise(frame):
    with pytest.raises(MissingColumnError, match="target_column 'nope'"):
        compute_partition_stats(frame, PreprocessConfig(target_column="nope"))
    with pytest.raises(MissingColumnError, match="force_categorical_columns \\['ghost'\\]"):
        compute_partition_stats(frame, PreprocessConfig(force_categorical_columns=("ghost",)))
    with pytest.raises(MissingColumnError, match="split column 'split'"):
        compute_partition_stats(frame.drop(columns="split"), CFG)


def test_forced_categorical_struct_field(frame):
    cfg = PreprocessConfig(exclude_columns=("ts", "entity"), force_categorical_columns=("store", "meta_kind"))
    pre = fit_preprocessor(compute_partition_stats(frame, cfg), cfg)
    assert "meta_kind" in pre.categories_


def test_struct_fields_inconsistent_across_partitions(frame):
    a = frame.iloc[:1000]
    b = frame.iloc[1000:2000].copy()
    b["meta"] = [{"score": 1.0, "extra": 2.0} for _ in range(len(b))]
    sa, sb = compute_partition_stats(a, CFG), compute_partition_stats(b, CFG)
    with pytest.raises(StructFieldsError, match=r"struct column 'meta'.*\['kind'\].*\['extra'\]"):
        sa.merge(sb)
    union = PreprocessConfig(
        exclude_columns=("ts", "entity"), force_categorical_columns=("store",), struct_fields="union"
    )
    merged = compute_partition_stats(a, union).merge(compute_partition_stats(b, union))
    pre = fit_preprocessor(merged, union)
    assert merged.struct_fields["meta"] == ["extra", "kind", "score"]
    assert "meta_extra" in pre.numeric_columns_ and "meta_kind" in pre.categories_
    X, names = pre.transform(a)  # 'extra' absent from this partition: imputed
    assert np.isfinite(X).all()


def test_all_null_column_dropped_with_warning(frame, caplog):
    df = frame.copy()
    df["empty"] = np.nan
    with caplog.at_level(logging.WARNING, logger="emberharmony_core.features.preprocess"):
        pre = fit_preprocessor(compute_partition_stats(df, CFG), CFG)
    assert "empty" not in pre.feature_names_
    assert pre.dropped_["empty"].startswith("all null in train")
    assert any("'empty'" in r.getMessage() for r in caplog.records)


def test_null_threshold_and_zero_variance(frame):
    df = frame.copy()
    rng = np.random.default_rng(5)
    df["sparse"] = np.where(rng.random(len(df)) < 0.95, np.nan, 1.0 + rng.random(len(df)))
    df["const"] = 4.0
    pre = fit_preprocessor(compute_partition_stats(df, CFG), CFG)
    assert "sparse" in pre.dropped_ and "null_threshold 0.9" in pre.dropped_["sparse"]
    train = df.loc[df["split"] == "train", ["const"]]
    scaler = StandardScaler().fit(train)
    j = pre.numeric_columns_.index("const")
    assert pre.scale_[j] == scaler.scale_[0] == 1.0
    lenient = PreprocessConfig(**{**CFG.to_dict(), "null_threshold": 1.0})
    assert "sparse" in fit_preprocessor(compute_partition_stats(df, CFG), lenient).numeric_columns_


def test_max_categories_and_high_cardinality(frame):
    cfg = PreprocessConfig(exclude_columns=("ts", "entity"), force_categorical_columns=("store",), max_categories=3)
    pre = fit_preprocessor(compute_partition_stats(frame, cfg), cfg)
    assert len(pre.categories_["store"]) == 3
    train = frame[frame["split"] == "train"]
    top = train["store"].value_counts().sort_index(kind="stable").sort_values(ascending=False, kind="stable").index[:3]
    assert pre.categories_["store"] == [str(v) for v in sorted(top)]
    rec = pre.summary().set_index("column").loc["store"]
    assert "max_categories=3" in rec["reason"] and rec["n_categories"] == 12

    df = frame.copy()
    df["uid"] = [f"u{i}" for i in range(len(df))]
    small = PreprocessConfig(exclude_columns=("ts", "entity"), max_category_values_tracked=100)
    parts = [compute_partition_stats(df.iloc[i : i + 1000], small) for i in range(0, 3000, 1000)]
    pre = fit_preprocessor(merge_stats(parts), small)
    assert pre.dropped_["uid"].startswith("high cardinality")


def test_target_kept_aside(frame, fitted):
    out = fitted.transform_frame(frame)
    assert list(out.columns[:5]) == ["ts", "entity", "split", "label"] + [NUMERIC[0]]
    pd.testing.assert_series_equal(out["label"], frame["label"])
    explicit = PreprocessConfig(exclude_columns=("ts", "entity"), target_column="amount")
    pre = fit_preprocessor(compute_partition_stats(frame, explicit), explicit)
    assert pre.target_ == "amount" and "amount" not in pre.feature_names_ and "label" in pre.numeric_columns_
    none = PreprocessConfig(exclude_columns=("ts", "entity"), detect_target=False)
    assert fit_preprocessor(compute_partition_stats(frame, none), none).target_ is None


def test_config_mismatch_and_bad_values(frame):
    a = compute_partition_stats(frame, CFG)
    b = compute_partition_stats(frame, PreprocessConfig(exclude_columns=("ts", "entity")))
    with pytest.raises(ConfigMismatchError, match="force_categorical_columns"):
        a.merge(b)
    with pytest.raises(ConfigMismatchError):
        fit_preprocessor(a, PreprocessConfig())
    df = frame.copy()
    df.loc[df["split"] == "train", "amount"] = np.inf
    with pytest.raises(PreprocessError, match="'amount' has infinite"):
        compute_partition_stats(df, CFG)


def test_summary_for_ui(fitted):
    summary = fitted.summary()
    assert {"column", "status", "reason", "null_share", "mean", "std", "median", "median_exact"} <= set(summary.columns)
    rows = summary.set_index("column")
    assert rows.loc["amount", "status"] == "kept" and 0.05 < rows.loc["amount", "null_share"] < 0.15
    assert "ts" not in rows.index  # excluded columns are passthrough, not reported
    assert rows.loc["label", "status"] == "target"
    assert isinstance(fitted.summary_records(), list)


def test_detect_from_arrow_schema():
    import pyarrow as pa

    schema = pa.schema(
        [
            ("ts", pa.timestamp("us")),
            ("x", pa.float32()),
            ("b", pa.bool_()),
            ("c", pa.string()),
            ("s", pa.struct([("f", pa.int64())])),
            ("y", pa.int8()),
        ]
    )
    roles = detect_column_types(schema, PreprocessConfig(split_column=None))
    assert roles["datetime"] == ["ts"] and roles["numeric"] == ["x"] and roles["boolean"] == ["b"]
    assert roles["categorical"] == ["c"] and roles["struct"] == ["s"] and roles["target"] == ["y"]


def test_sketch_mode_medians_within_stated_bound(frame, parts):
    cfg = PreprocessConfig(
        exclude_columns=("ts", "entity"), force_categorical_columns=("store",), median_exact_max_values=50
    )
    pre = fit_preprocessor(merge_stats(compute_partition_stats(p, cfg) for p in parts), cfg)
    whole = fit_preprocessor(compute_partition_stats(frame, cfg), cfg)
    np.testing.assert_array_equal(pre.statistics_, whole.statistics_)  # sketches merge exactly
    train = _train_flat(frame)[NUMERIC].astype(np.float64)
    exact = SimpleImputer(strategy="median").fit(train).statistics_
    rows = pre.summary().set_index("column")
    for j, col in enumerate(NUMERIC):
        bound = rows.loc[col, "median_error_bound"]
        assert abs(pre.statistics_[j] - exact[j]) <= bound + 1e-300, col
        if not rows.loc[col, "median_exact"]:
            assert bound <= cfg.median_relative_accuracy * abs(exact[j]) * 1.001 + 1e-12


def test_nullable_and_arrow_dtypes():
    df = pd.DataFrame(
        {
            "split": pd.Series(["train", "train", "test", "train"], dtype="string[pyarrow]"),
            "i": pd.Series([1, None, 3, 4], dtype="Int64"),
            "b": pd.Series([True, None, False, False], dtype="boolean"),
            "c": pd.Series(["x", "y", None, "x"], dtype="string[pyarrow]"),
            "o": pd.Series([True, None, True, False], dtype=object),
        }
    )
    cfg = PreprocessConfig()
    roles = detect_column_types(df, cfg)
    assert roles["numeric"] == ["i"] and roles["boolean"] == ["b", "o"] and roles["categorical"] == ["c"]
    pre = fit_preprocessor(compute_partition_stats(df, cfg), cfg)
    X, names = pre.transform(df)
    assert names == ["b", "i", "o", "c_x", "c_y"] and np.isfinite(X).all()
    np.testing.assert_array_equal(pre.statistics_, [0.5, 2.5, 0.5])  # medians of train non-nulls (rows 0, 1, 3)


@pytest.mark.parametrize("bad_value, dtype", [(np.inf, "float32"), (-np.inf, "float64"), (1e200, "float32")])
def test_transform_refuses_values_that_cannot_be_finite_features(frame, bad_value, dtype):
    """+-inf anywhere (any split), or a value beyond the output dtype's range, fails naming the column and the
    value: such rows never reach windows or projections. NaN stays fine (imputed)."""
    config = PreprocessConfig(exclude_columns=("ts", "entity"), force_categorical_columns=("store",), dtype=dtype)
    fitted = fit_preprocessor(compute_partition_stats(frame, config), config)
    broken = frame.copy()
    broken.loc[[5, 9], "amount"] = bad_value
    broken.loc[5, "split"] = "test"
    with pytest.raises(PreprocessError, match=r"column 'amount': 2 value\(s\) not finite") as raised:
        fitted.transform(broken)
    assert repr(float(bad_value)) in str(raised.value) or "inf" in str(raised.value)
    fine = frame.copy()
    fine.loc[[5, 9], "amount"] = np.nan
    assert np.isfinite(fitted.transform(fine)[0]).all()


@pytest.mark.parametrize(
    "values",
    [
        np.arange(3000, dtype=np.float64) * 0.37,  # exact, every count 1: one byte a count
        np.repeat([1.5, -2.0, 7.0], [70_000, 3, 300]),  # exact, counts beyond 2**16
        np.concatenate([np.geomspace(1e-6, 1e6, 30_000), -np.geomspace(1e-3, 1e3, 20_000), np.zeros(5)]),  # buckets
    ],
)
def test_sketch_round_trips_through_json_with_narrow_integer_layouts(values):
    from emberharmony_core.features.preprocess.sketch import MedianSketch

    sketch = MedianSketch.from_values(values)
    stored = json.loads(json.dumps(sketch.to_dict()))
    back = MedianSketch.from_dict(stored)
    assert back == sketch and back.count == len(values) and back.median() == sketch.median()
    layouts = [v["dtype"] for v in stored.values() if isinstance(v, dict)]
    assert all(layout in ("<f8", "<u1", "<u2", "<u4", "<i1", "<i2", "<i4", "<i8") for layout in layouts)
    if sketch.exact and values.size == 3000:
        assert stored["counts"]["dtype"] == "<u1"
    # the earlier format (int64 counts) still reads
    old = dict(stored)
    if sketch.exact:
        old["counts"] = {"b64": base64.b64encode(sketch.counts.astype("<i8").tobytes()).decode(), "dtype": "<i8"}
        assert MedianSketch.from_dict(old) == sketch


def test_bucketed_sketch_counts_equal_a_per_value_reference():
    """Bucket counts of an exact sketch turned into buckets (runs of sorted values) equal, bucket by bucket, the
    counts of every value's own bucket index (the sketch's definition), for both signs and zeros."""
    import math

    from emberharmony_core.features.preprocess.sketch import MedianSketch

    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(30_000) * 50, np.zeros(40), -rng.lognormal(size=5_000)])
    sketch = MedianSketch.from_values(x, alpha=1e-3, max_exact=1_000)
    assert not sketch.exact and sketch.zero_count == 40
    log_gamma = math.log(sketch.gamma)
    for sign, index, counts in ((-1, sketch.neg_index, sketch.neg_counts), (1, sketch.pos_index, sketch.pos_counts)):
        own = np.ceil(np.log(np.abs(x[np.sign(x) == sign])) / log_gamma).astype(np.int64)
        ref_index, ref_counts = np.unique(own, return_counts=True)
        np.testing.assert_array_equal(index, ref_index)
        np.testing.assert_array_equal(counts, ref_counts)
        assert counts.dtype == np.int64


def test_sketch_values_are_stored_as_compressed_differences_and_older_files_still_read():
    """Ascending float64 values (and bucket indices) are stored as zstd-compressed differences of order-preserving
    keys: bit for bit the same values back, smaller than their plain base64, and the plain format still reads."""
    from emberharmony_core.features.preprocess.sketch import MedianSketch

    rng = np.random.default_rng(11)
    values = np.concatenate([rng.normal(60.0, 3.0, 2_500), -rng.lognormal(size=400), [0.0, -0.0, 1e-300, -1e300]])
    exact = MedianSketch.from_values(values)
    stored = json.loads(json.dumps(exact.to_dict()))
    assert stored["values"]["delta"] == "ordered" and stored["values"]["codec"] == "zstd"
    back = MedianSketch.from_dict(stored)
    assert np.array_equal(back.values.view(np.uint64), exact.values.view(np.uint64)) and back.median() == exact.median()
    plain = base64.b64encode(exact.values.astype("<f8").tobytes()).decode()
    assert len(stored["values"]["b64"]) < 0.8 * len(plain)
    earlier = {**stored, "values": {"b64": plain, "dtype": "<f8"}}  # the format before this one
    assert MedianSketch.from_dict(earlier) == exact
    bucketed = MedianSketch.from_values(values, max_exact=100)
    stored = json.loads(json.dumps(bucketed.to_dict()))
    assert stored["pos_index"]["delta"] == "ordered" and MedianSketch.from_dict(stored) == bucketed
    with pytest.raises(ValueError, match="unknown codec 'lz9'"):
        MedianSketch.from_dict({**stored, "pos_index": {**stored["pos_index"], "codec": "lz9"}})
