"""``settings.dtype`` holds end to end: every stored float column, window and projection has that dtype,
and float64 agrees with a float64 NumPy reference of the windows' PCA (real DuckDB file, real Dagster)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emberharmony_assets.testing import materialize_days
from emberharmony_core.features.pca import PCAModel
from emberharmony_core.layout import load_stride_windows
from emberharmony_core.store import ArtifactStore

from .conftest import PARTITIONS, make_resources


def float_types(path) -> set[str]:
    return {str(field.type) for field in pq.read_schema(path) if pa.types.is_floating(field.type)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_setting_reaches_every_stored_float(demo_database, tmp_path, dtype):
    artifacts = tmp_path / "artifacts"
    resources = make_resources(demo_database, str(artifacts), dtype=dtype)
    assert materialize_days(PARTITIONS[0], PARTITIONS[-1], resources=resources).success
    want = {"float" if dtype == "float32" else "double"}
    day = PARTITIONS[2]
    assert float_types(artifacts / "cyclical_features" / f"date={day}" / "part-0.parquet") == want
    features = pq.read_table(artifacts / "features" / f"date={day}" / "part-0.parquet")
    names = [n for n in features.column_names if "_sin_" in n or "_cos_" in n or n.startswith("temperature")]
    assert names and {str(features.schema.field(n).type) for n in names} == want
    assert float_types(artifacts / "projected_windows" / "stride=3" / f"date={day}" / "part-0.parquet") == want
    store = ArtifactStore(artifacts)
    windows, _ = load_stride_windows(store, day, stride=3)
    assert windows.dtype == np.dtype(dtype)

    if dtype == "float64":  # the stored model equals a float64 NumPy PCA of every train window of every day
        train = []
        for key in PARTITIONS:
            w, index = load_stride_windows(store, key, stride=3)
            train.append(w[index["split"].to_numpy() == "train"])
        x = np.concatenate(train)
        centred = x - x.mean(axis=0)
        eigenvalues = np.linalg.eigvalsh(centred.T @ centred / (len(x) - 1))[::-1]
        model = PCAModel.from_arrays(store.read_arrays("pca_models", "stride=3"))
        k = model.n_components_
        np.testing.assert_allclose(model.explained_variance_, eigenvalues[:k], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(model.explained_variance_ratio_, eigenvalues[:k] / eigenvalues.sum(), rtol=1e-9)
