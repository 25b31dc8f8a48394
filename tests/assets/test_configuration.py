"""Configuration: the backend resource reaches the compute; bad settings fail before any work."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize

from emberharmony_assets.assets import all_assets
from emberharmony_assets.definitions import DEMO_SOURCE
from emberharmony_assets.resources import BackendResource, DuckDBSourceResource
from emberharmony_core.ops import get_backend
from tests.conftest import artifact_files, failure_text, materialized_metadata

from .conftest import PARTITIONS, make_resources

CALLS: list[tuple[str, str]] = []


def assert_fails(resources, selection, message):
    with pytest.raises(Exception) as info:
        materialize(
            all_assets,
            resources=resources,
            partition_key=PARTITIONS[0],
            instance=DagsterInstance.ephemeral(),
            selection=selection,
        )
    assert re.search(message, failure_text(info.value)), failure_text(info.value)


class _Recording:
    """A real backend that records which of its methods the assets call."""

    def __init__(self, inner):
        self._inner = inner
        self.name = inner.name
        self.pi = inner.pi

    def __getattr__(self, attribute):
        target = getattr(self._inner, attribute)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            CALLS.append((self._inner.name, attribute))
            return target(*args, **kwargs)

        return call


class RecordingBackend(BackendResource):
    def get(self):
        return _Recording(get_backend(self.name, self.device))


@pytest.mark.parametrize("name", ["numpy", "torch", "mlx"])
def test_the_backend_resource_reaches_every_compute_asset(demo_database, tmp_path, name, monkeypatch):
    CALLS.clear()
    backend_class = type(get_backend(name))
    real_matmul = backend_class.matmul

    def recorded_matmul(self, a, b):  # PCA dispatches on the array's own backend: record it there
        CALLS.append((self.name, "matmul"))
        return real_matmul(self, a, b)

    monkeypatch.setattr(backend_class, "matmul", recorded_matmul)
    resources = make_resources(demo_database, str(tmp_path / "artifacts"), backend=name)
    resources["backend"] = RecordingBackend(name=name)
    result = materialize(
        all_assets,
        resources=resources,
        partition_key=PARTITIONS[0],
        instance=DagsterInstance.ephemeral(),
        selection=["raw_chunk", "split_data", "cyclical_features", "preprocess_stats", "preprocessor"],
    )
    assert result.success
    instance = DagsterInstance.ephemeral()
    result = materialize(
        all_assets,
        resources=resources,
        partition_key=PARTITIONS[0],
        instance=instance,
        selection=[
            "features",
            "window_tails",
            "window_carry",
            "stride_windows",
            "pca_stats",
            "pca_models",
            "projected_windows",
        ],
    )
    assert result.success
    used = {method for backend, method in CALLS if backend == name}
    assert "take" in used  # cyclical_features: the per-hour sin/cos table; windows gathered from the feature rows
    assert "asarray" in used  # the feature rows go to the backend once per chunk
    assert "matmul" in used  # pca_stats and projected_windows
    assert "eigh" in used  # pca_models: the eigendecomposition runs on the chosen backend too
    for asset in ("stride_windows", "pca_stats", "pca_models", "projected_windows"):
        assert materialized_metadata(result, asset)["backend"].value == name
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(f"backend '{name}' -> {name}" in message for message in logged), (
        "the run's Dagster log names the backend"
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(window_size=0), "window_size must be >= 1, got 0"),
        (dict(strides=[]), "strides is empty"),
        (dict(strides=[1, 0]), r"every stride must be >= 1, got \[0\]"),
        (dict(split_fractions=[0.8, 0.1, 0.2]), "sum"),
    ],
)
def test_bad_settings_fail_before_any_work(demo_database, tmp_path, settings, message):
    resources = make_resources(demo_database, str(tmp_path / "artifacts"), **settings)
    assert_fails(resources, ["raw_chunk", "split_data"], message)
    assert artifact_files(tmp_path / "artifacts") == []


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(dtype="float16"), "dtype must be 'float32' or 'float64', got 'float16'"),
        (
            dict(arrow_memory_pool="tcmalloc"),
            "arrow_memory_pool must be one of system, mimalloc, jemalloc .*'tcmalloc'",
        ),
    ],
)
def test_a_setting_outside_its_choices_fails_when_given(demo_database, tmp_path, settings, message):
    """Settings with a fixed set of values are choice lists (enums) in the launchpad; given in Python, a bad value
    fails at once, with the setting's own message, before any run (tests/assets/test_launchpad.py: run config)."""
    with pytest.raises(ValueError, match=message):
        make_resources(demo_database, str(tmp_path / "artifacts"), **settings)
    assert not (tmp_path / "artifacts").exists()


@pytest.fixture
def arrow_pool(monkeypatch):
    """Arrow's default pool restored after the test (the setting changes it for the whole process)."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


@pytest.mark.parametrize("setting, expected", [(None, "system"), ("mimalloc", "mimalloc"), ("system", "system")])
def test_the_arrow_memory_pool_setting_is_the_runs_allocator(demo_database, tmp_path, arrow_pool, setting, expected):
    pa.set_memory_pool(pa.mimalloc_memory_pool() if expected == "system" else pa.system_memory_pool())  # the other one
    resources = make_resources(demo_database, str(tmp_path / "artifacts"), arrow_memory_pool=setting)
    result = materialize(
        all_assets,
        resources=resources,
        partition_key=PARTITIONS[0],
        instance=DagsterInstance.ephemeral(),
        selection=["raw_chunk"],
    )
    assert result.success
    assert pa.default_memory_pool().backend_name == expected


def test_an_arrow_pool_chosen_in_the_environment_is_kept_by_default(demo_database, tmp_path, arrow_pool, monkeypatch):
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")  # as if the process had started with it
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    assert materialize(
        all_assets,
        resources=resources,
        partition_key=PARTITIONS[0],
        instance=DagsterInstance.ephemeral(),
        selection=["raw_chunk"],
    ).success
    assert pa.default_memory_pool().backend_name == "mimalloc"


def test_unknown_backend_fails_naming_the_available_ones(demo_database, tmp_path):
    with pytest.raises(ValueError, match=r"unknown backend 'jax'.*auto, numpy, torch, mlx"):
        make_resources(demo_database, str(tmp_path / "artifacts"), backend="jax")
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("threads", [0, -2])
def test_backend_threads_below_one_fail_the_run_naming_the_setting(demo_database, tmp_path, threads):
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    resources["backend"] = BackendResource(name="numpy", threads=threads)
    assert_fails(resources, ["raw_chunk"], rf"backend threads must be a whole number >= 1, got {threads}")
    assert artifact_files(tmp_path / "artifacts") == []


def test_a_backend_that_is_not_installed_fails_the_run_naming_the_available_ones(demo_database, tmp_path, monkeypatch):
    import emberharmony_core.ops as ops

    monkeypatch.setattr(
        ops, "_backend_class", lambda name: (_ for _ in ()).throw(ImportError(f"No module named {name!r}"))
    )
    resources = make_resources(demo_database, str(tmp_path / "artifacts"), backend="mlx")
    assert_fails(
        resources, ["raw_chunk", "split_data", "cyclical_features"], r"backend 'mlx' is not installed.*available"
    )
    assert artifact_files(tmp_path / "artifacts") == []


def test_a_missing_column_fails_naming_it(demo_database, tmp_path):
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    resources["source"] = DuckDBSourceResource(
        database=demo_database, **{**DEMO_SOURCE, "feature_columns": ["temperature", "humidty"]}
    )
    assert_fails(resources, ["raw_chunk"], r"no column 'humidty' \(feature_columns\).*did you mean|no column 'humidty'")
    assert artifact_files(tmp_path / "artifacts") == []
