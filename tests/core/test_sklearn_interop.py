"""scikit-learn interop: PCAModel.to_sklearn(), FittedPreprocessor.to_sklearn_pipeline(), StreamingPCA.

StreamingPCA runs scikit-learn's own estimator checks (``parametrize_with_checks``, legacy checks included; scikit-learn
1.9) in four configurations. Expected failures: none for ``StreamingPCA()`` (the default), ``dtype="float64"`` and
``n_components=0.9``; for ``dtype="float32"`` one, ``check_methods_sample_order_invariance`` (float32 products: a
projection moves by 1 ulp when the rows are permuted, the check's rtol is 1e-7). Skipped by scikit-learn itself in
every configuration: ``check_array_api_input`` (runs only with ``SCIPY_ARRAY_API=1``; the estimator does not claim
array-API support, non-NumPy arrays go through ``backend=``).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.base import clone  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from emberharmony_core.features import PCAModel, PCAStats, StreamingPCA  # noqa: E402
from emberharmony_core.features.preprocess import (  # noqa: E402
    PreprocessConfig,
    compute_partition_stats,
    fit_preprocessor,
    merge_stats,
)
from emberharmony_core.store import frame_from_arrow  # noqa: E402
from tests.core.test_preprocess import CFG, make_frame  # noqa: E402  (the demo-like frame of the preprocess tests)


def correlated(n, d, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * np.linspace(3.0, 0.2, d) + rng.normal(5.0, 2.0, d)
    return X.astype(dtype)


# --------------------------------------------------------------------------- PCAModel.to_sklearn


@pytest.mark.parametrize("n, d, k", [(400, 12, 5), (300, 8, 8), (9, 20, 4)])
def test_pca_model_to_sklearn_equals_ours_and_a_real_sklearn_fit(n, d, k):
    X = correlated(n, d)
    model = PCAStats().update(X).fit(k)
    ours = model.to_sklearn()
    reference = PCA(n_components=k, svd_solver="full").fit(X)

    assert isinstance(ours, PCA) and ours.n_components == k and ours.svd_solver == "full"
    for name in ("n_components_", "n_samples_", "n_features_in_"):
        assert getattr(ours, name) == getattr(reference, name)
    # same sign rule (largest |loading| positive, sklearn >= 1.5), so no sign flips are needed;
    # up to sign holds a fortiori
    np.testing.assert_allclose(ours.components_, reference.components_, atol=1e-9)
    np.testing.assert_allclose(np.abs(ours.components_), np.abs(reference.components_), atol=1e-9)
    for name in ("mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), rtol=1e-9, atol=1e-9, err_msg=name)
    assert ours.noise_variance_ == pytest.approx(reference.noise_variance_, rel=1e-8, abs=1e-9)

    Xt = correlated(50, d, seed=1)
    np.testing.assert_allclose(ours.transform(Xt), model.transform(Xt), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(ours.transform(Xt), reference.transform(Xt), atol=1e-8)
    Z = reference.transform(Xt)
    np.testing.assert_allclose(ours.inverse_transform(Z), reference.inverse_transform(Z), atol=1e-8)
    np.testing.assert_allclose(ours.inverse_transform(Z), model.inverse_transform(Z), atol=1e-10)
    np.testing.assert_allclose(ours.get_covariance(), reference.get_covariance(), rtol=1e-8, atol=1e-8)
    if k < min(n, d) and reference.noise_variance_ > 1e-9:  # the precision needs a non-zero noise variance
        np.testing.assert_allclose(ours.get_precision(), reference.get_precision(), rtol=1e-6, atol=1e-8)
        assert ours.score(Xt) == pytest.approx(reference.score(Xt), rel=1e-8)


def test_pca_model_to_sklearn_from_stored_arrays_and_float32_windows():
    X = correlated(2000, 10, seed=3, dtype=np.float32)
    model = PCAModel.from_arrays(PCAStats().update(X).fit(4).to_arrays())  # as pca_models stores it
    ours = model.to_sklearn()
    assert ours.components_.dtype == np.float64
    projected = model.transform(X)
    assert projected.dtype == np.float32
    np.testing.assert_allclose(ours.transform(X), projected, rtol=1e-4, atol=1e-3)
    reference = PCA(4, svd_solver="full").fit(X.astype(np.float64))
    np.testing.assert_allclose(ours.transform(X), reference.transform(X.astype(np.float64)), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="features"):
        ours.transform(X[:, :5])


# --------------------------------------------------------------------------- StreamingPCA


def expected_failed_checks(estimator):
    """None for the default, float64 and float-n_components configurations. ``dtype="float32"`` forces float32
    products on the checks' float64 data, and one check's tolerance is float64's."""
    if estimator.dtype == "float32":
        return {
            "check_methods_sample_order_invariance": "float32 products: a row's projection may change by 1 ulp "
            "(measured rtol 1.4e-7) when the rows are permuted (BLAS blocks rows differently); "
            "the check compares with rtol 1e-7"
        }
    return {}


@parametrize_with_checks(
    [StreamingPCA(), StreamingPCA(dtype="float32"), StreamingPCA(dtype="float64"), StreamingPCA(n_components=0.9)],
    expected_failed_checks=expected_failed_checks,
)
def test_streaming_pca_passes_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("n_components", [None, 1, 6, 0.5, 0.95])
def test_streaming_pca_equals_sklearn_full_pca(n_components):
    X = correlated(500, 15, seed=7)
    ours = StreamingPCA(n_components=n_components).fit(X)
    reference = PCA(n_components=n_components, svd_solver="full").fit(X)
    assert ours.n_components_ == reference.n_components_ and ours.n_samples_ == reference.n_samples_ == 500
    assert ours.n_features_in_ == 15
    np.testing.assert_allclose(ours.components_, reference.components_, atol=1e-9)
    for name in ("mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), rtol=1e-9, atol=1e-9, err_msg=name)
    assert ours.noise_variance_ == pytest.approx(reference.noise_variance_, rel=1e-8, abs=1e-9)
    Xt = correlated(40, 15, seed=8)
    np.testing.assert_allclose(ours.transform(Xt), reference.transform(Xt), atol=1e-8)
    np.testing.assert_allclose(ours.fit_transform(X), reference.fit_transform(X), atol=1e-8)
    Z = ours.transform(Xt)
    np.testing.assert_allclose(ours.inverse_transform(Z), reference.inverse_transform(Z), atol=1e-8)
    np.testing.assert_allclose(ours.to_sklearn().transform(Xt), reference.transform(Xt), atol=1e-8)


def test_partial_fit_over_shuffled_batches_equals_fit_on_all():
    X = correlated(1000, 12, seed=11)
    whole = StreamingPCA(n_components=5).fit(X)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(X))
    cuts = np.sort(rng.choice(np.arange(1, len(X)), size=9, replace=False))
    batches = np.split(X[rows], cuts)
    rng.shuffle(batches)
    streamed = StreamingPCA(n_components=5)
    for batch in batches:
        streamed.partial_fit(batch)
    assert streamed.n_samples_ == whole.n_samples_ == 1000
    for name in ("components_", "mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(whole, name), rtol=1e-10, atol=1e-10, err_msg=name)
    assert streamed.noise_variance_ == pytest.approx(whole.noise_variance_, rel=1e-10)
    np.testing.assert_allclose(streamed.transform(X), whole.transform(X), atol=1e-9)
    # the statistics merge like any PCAStats: two estimators' stats_ give the whole's model
    a, b = StreamingPCA(5).partial_fit(X[:300]), StreamingPCA(5).partial_fit(X[300:])
    np.testing.assert_allclose(a.stats_.merge(b.stats_).fit(5).components_, whole.components_, atol=1e-10)
    # float32 batches: the fast path, close to float64
    fast = StreamingPCA(n_components=5, dtype="float32")
    for batch in batches:
        fast.partial_fit(batch)
    assert fast.transform(X).dtype == np.float32
    np.testing.assert_allclose(np.abs(np.sum(fast.components_ * whole.components_, axis=1)), 1.0, atol=1e-5)


def test_partial_fit_accumulates_until_a_model_can_be_fitted():
    X = correlated(20, 6, seed=2)
    pca = StreamingPCA(n_components=4).partial_fit(X[:1])
    with pytest.raises(NotFittedError):
        pca.transform(X)
    pca.partial_fit(X[1:3])  # 3 rows < 4 components: still accumulating
    assert not hasattr(pca, "components_")
    pca.partial_fit(X[3:])
    np.testing.assert_allclose(pca.components_, StreamingPCA(4).fit(X).components_, atol=1e-10)
    with pytest.raises(ValueError, match="X has 5 features, but StreamingPCA is expecting 6"):
        pca.partial_fit(X[:, :5])
    with pytest.raises(ValueError, match="n_components=7 must be <= n_features=6"):
        StreamingPCA(n_components=7).fit(X)
    with pytest.raises(ValueError, match="must be between 1 and min"):
        StreamingPCA(n_components=5).fit(X[:3])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        StreamingPCA(n_components=1.5).fit(X)
    with pytest.raises(ValueError, match="dtype must be"):
        StreamingPCA(dtype="float16").fit(X)


def test_streaming_pca_params_clone_pickle_pipeline_and_pandas_output():
    X = correlated(300, 8, seed=4)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    pca = StreamingPCA(n_components=3, dtype="float64")
    assert pca.get_params() == {"n_components": 3, "dtype": "float64", "backend": None}
    pca.set_params(n_components=4)
    assert clone(pca).get_params()["n_components"] == 4
    pca.fit(frame)
    assert list(pca.feature_names_in_) == list(frame.columns)
    assert list(pca.get_feature_names_out()) == ["streamingpca0", "streamingpca1", "streamingpca2", "streamingpca3"]
    again = pickle.loads(pickle.dumps(pca))
    np.testing.assert_array_equal(again.transform(frame), pca.transform(frame))
    pipe = make_pipeline(StandardScaler(), StreamingPCA(n_components=2)).fit(frame)
    reference = make_pipeline(StandardScaler(), PCA(n_components=2, svd_solver="full")).fit(frame)
    np.testing.assert_allclose(pipe.transform(frame), reference.transform(frame), atol=1e-9)
    out = StreamingPCA(n_components=2).set_output(transform="pandas").fit(frame).transform(frame)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["streamingpca0", "streamingpca1"]
    assert list(pca.to_sklearn().feature_names_in_) == list(frame.columns)


def test_streaming_pca_on_each_backend(backend):
    X = correlated(400, 10, seed=5)
    reference = StreamingPCA(n_components=4).fit(X)
    ours = StreamingPCA(n_components=4, backend=backend.name).fit(X)
    np.testing.assert_allclose(ours.components_, reference.components_, atol=1e-8)
    out = ours.transform(X)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, reference.transform(X), atol=1e-6)


# --------------------------------------------------------------------------- FittedPreprocessor.to_sklearn_pipeline


@pytest.fixture(scope="module")
def frame():
    return make_frame()


def fit_on(frame, config=CFG):
    parts = [frame.iloc[:1000], frame.iloc[1000:1800], frame.iloc[1800:]]
    return fit_preprocessor(merge_stats(compute_partition_stats(p, config) for p in parts), config)


def with_unseen(frame):
    other = frame.copy()
    other["color"] = other["color"].replace({"teal": "purple"})  # "purple" never seen in train
    other.loc[other.index[:5], "store"] = 99  # an unseen store code
    return other


def test_preprocessor_pipeline_equals_our_transform(frame):
    fitted = fit_on(frame)
    pipe = fitted.to_sklearn_pipeline()
    other = with_unseen(frame)
    assert other["amount"].isna().any() and other["color"].isna().any() and other["meta"].isna().any()
    expected, names = fitted.transform(other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no feature-name or unknown-category warnings
        got = pipe.transform(other)
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert list(pipe.get_feature_names_out()) == names == fitted.feature_names_
    unseen = (other["color"] == "purple").to_numpy()
    assert not got[np.ix_(unseen, [j for j, n in enumerate(names) if n.startswith("color_")])].any()

    # the ColumnTransformer alone needs flat input (STRUCT columns flattened): float64, equal after the cast
    encode = pipe["encode"]
    assert isinstance(encode, ColumnTransformer)
    flat = fitted.flatten(other)
    np.testing.assert_array_equal(encode.transform(flat).astype(np.float32), expected)

    # the pieces are the scikit-learn objects, with our statistics and vocabulary
    numeric = encode.named_transformers_["numeric"]
    imputer, scaler = numeric.named_steps["impute"], numeric.named_steps["scale"]
    assert isinstance(imputer, SimpleImputer) and imputer.strategy == "median"
    np.testing.assert_array_equal(imputer.statistics_, fitted.statistics_)
    assert isinstance(scaler, StandardScaler)
    np.testing.assert_array_equal(scaler.scale_, fitted.scale_)
    assert scaler.n_samples_seen_ == fitted.n_samples_seen_
    onehot = encode.named_transformers_["categorical"].named_steps["onehot"]
    assert isinstance(onehot, OneHotEncoder) and onehot.handle_unknown == "ignore"
    assert [list(c) for c in onehot.categories_] == list(fitted.categories_.values())
    assert list(fitted.categories_["store"]) == [
        str(i) for i in range(1, 13)
    ]  # our (numeric) order, not sorted as text

    # and a real fit of the same sklearn objects on the train rows gives the same numeric statistics
    train = flat[frame["split"].to_numpy() == "train"]
    real = SimpleImputer(strategy="median").fit(train[fitted.numeric_columns_].astype(np.float64))
    np.testing.assert_array_equal(real.statistics_, imputer.statistics_)


def test_preprocessor_pipeline_with_max_categories_arrow_structs_and_pandas_output(frame):
    config = PreprocessConfig(exclude_columns=("ts", "entity"), force_categorical_columns=("store",), max_categories=3)
    fitted = fit_on(frame, config)
    assert len(fitted.categories_["store"]) == 3  # the rarest 9 stores map to all zeros
    other = with_unseen(frame)
    arrow = frame_from_arrow(pa.Table.from_pandas(other, preserve_index=False))  # meta as an Arrow STRUCT column
    assert isinstance(arrow["meta"].dtype, pd.ArrowDtype)
    expected, names = fitted.transform(other)
    np.testing.assert_array_equal(fitted.to_sklearn_pipeline().transform(other), expected)
    np.testing.assert_array_equal(fitted.to_sklearn_pipeline().transform(arrow), fitted.transform(arrow)[0])
    np.testing.assert_array_equal(fitted.transform(arrow)[0], expected)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fitted.to_sklearn_pipeline(output="pandas").transform(other)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == names and out.index.equals(other.index)
    np.testing.assert_array_equal(out.to_numpy(), expected)
    again = pickle.loads(pickle.dumps(fitted.to_sklearn_pipeline()))
    np.testing.assert_array_equal(again.transform(other), expected)


def test_preprocessor_pipeline_struct_field_absent_from_a_partition(frame):
    union = PreprocessConfig(
        exclude_columns=("ts", "entity"), force_categorical_columns=("store",), struct_fields="union"
    )
    a, b = frame.iloc[:1000], frame.iloc[1000:2000].copy()
    b["meta"] = [{"score": 1.0, "extra": 2.0} for _ in range(len(b))]
    fitted = fit_preprocessor(compute_partition_stats(a, union).merge(compute_partition_stats(b, union)), union)
    assert "meta_extra" in fitted.numeric_columns_
    pipe = fitted.to_sklearn_pipeline()
    np.testing.assert_array_equal(pipe.transform(a), fitted.transform(a)[0])  # 'extra' absent here: imputed
    np.testing.assert_array_equal(pipe.transform(b), fitted.transform(b)[0])  # 'kind' absent here: zeros
    with pytest.raises(KeyError, match="amount"):
        pipe.transform(a.drop(columns="amount"))


def test_legacy_to_sklearn_still_returns_imputer_and_scaler(frame):
    imputer, scaler = fit_on(frame).to_sklearn()
    assert isinstance(imputer, SimpleImputer) and isinstance(scaler, StandardScaler)
    assert isinstance(fit_on(frame).to_sklearn_pipeline(), Pipeline)
