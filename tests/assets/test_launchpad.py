"""What the launchpad and the Resources tab show: choice lists for the settings with a fixed set of values,
short resource descriptions, and an io_manager that says what it is (these assets store nothing through it);
a code location that loads without Dagster's maturity warnings; a scree plot where every stride shows."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterInvalidConfigError,
    asset,
    build_input_context,
    build_output_context,
    materialize,
)
from dagster._config import ConfigTypeKind
from pydantic import ValidationError

from emberharmony_assets import testing
from emberharmony_assets.definitions import (
    DAGSTER_MATURITY_WARNINGS,
    NoValuesIOManager,
    build_definitions,
    default_backend,
    defs,
)
from emberharmony_assets.plots import scree_plot_png, stride_style
from emberharmony_assets.resources import BackendResource, PipelineSettings

from .conftest import PARTITIONS, make_resources

ROOT = Path(__file__).resolve().parents[2]

CHOICES = {  # (resource, setting): the values the launchpad offers
    ("backend", "name"): ["auto", "numpy", "torch", "mlx"],
    ("settings", "dtype"): ["float32", "float64"],
    ("settings", "on_duplicate"): ["error", "keep_last", "mean"],
    ("settings", "struct_fields"): ["error", "union"],
    ("settings", "arrow_memory_pool"): ["system", "mimalloc", "jemalloc"],
}


def top_level_resources():
    return defs.get_repository_def().get_top_level_resources()


def config_field(resource: str, setting: str):
    return top_level_resources()[resource].config_schema.config_type.fields[setting]


def enum_type(field):
    config_type = field.config_type
    if config_type.kind == ConfigTypeKind.NONEABLE:
        config_type = config_type.inner_type
    return config_type


@pytest.mark.parametrize("resource, setting", list(CHOICES))
def test_settings_with_a_fixed_set_of_values_are_choice_lists(resource, setting):
    field = config_field(resource, setting)
    choices = enum_type(field)
    assert choices.kind == ConfigTypeKind.ENUM, (resource, setting, choices.kind)
    assert [value.config_value for value in choices.enum_values] == CHOICES[resource, setting]
    defaults = {"name": "auto", "dtype": "float32", "on_duplicate": "error", "struct_fields": "error"}
    if setting in defaults:
        assert field.default_value == defaults[setting]
    else:
        assert not field.default_provided or field.default_value is None


def test_device_stays_free_text():
    """torch takes any cuda:N: not a choice list."""
    assert enum_type(config_field("backend", "device")).kind != ConfigTypeKind.ENUM


def test_strings_still_work_and_the_settings_hold_plain_strings():
    settings = PipelineSettings(
        dtype="float64", on_duplicate="keep_last", struct_fields="union", arrow_memory_pool="system"
    )
    for name, value in dict(
        dtype="float64", on_duplicate="keep_last", struct_fields="union", arrow_memory_pool="system"
    ).items():
        held = getattr(settings, name)
        assert held == value and type(held) is str, (name, held)  # f-strings and metadata see "float64"
    assert f"{settings.dtype}" == "float64" and settings.model_dump()["on_duplicate"] == "keep_last"
    assert BackendResource(name=" NumPy ").name == "numpy"  # as get_backend has always accepted
    assert PipelineSettings().arrow_memory_pool is None and PipelineSettings().dtype == "float32"


def test_the_enum_members_work_as_values_too():
    dtype = enum_type(config_field("settings", "dtype"))
    member = PipelineSettings.model_fields["dtype"].annotation["float64"]
    assert PipelineSettings(dtype=member).dtype == "float64" and dtype.given_name == "FloatDtype"


@pytest.mark.parametrize(
    "given, message",
    [
        (dict(dtype="float16"), "dtype must be 'float32' or 'float64', got 'float16'"),
        (dict(on_duplicate="first"), "on_duplicate must be one of 'error', 'keep_last', 'mean', got 'first'"),
        (dict(struct_fields="merge"), "struct_fields must be 'error' or 'union', got 'merge'"),
        (
            dict(arrow_memory_pool="tcmalloc"),
            "arrow_memory_pool must be one of system, mimalloc, jemalloc (or unset), got 'tcmalloc'",
        ),
    ],
)
def test_a_bad_value_given_in_python_fails_naming_the_setting_and_its_values(given, message):
    with pytest.raises(ValidationError) as info:
        PipelineSettings(**given)
    assert message in str(info.value)


def test_an_unknown_backend_fails_naming_the_choices():
    with pytest.raises(
        ValidationError,
        match=r"unknown backend 'jax': the backend name must be one of "
        r"auto, numpy, torch, mlx",
    ):
        BackendResource(name="jax")


def test_the_backend_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMBERHARMONY_BACKEND", "numpy")
    assert default_backend().name == "numpy"
    monkeypatch.setenv("EMBERHARMONY_BACKEND", "jax")
    with pytest.raises(ValueError, match=r"EMBERHARMONY_BACKEND: unknown backend 'jax'.*auto, numpy, torch, mlx"):
        default_backend()


SEEN: dict = {}


@asset
def reads_settings(settings: PipelineSettings, backend: BackendResource) -> None:
    SEEN.update(
        dtype=settings.dtype, on_duplicate=settings.on_duplicate, pool=settings.arrow_memory_pool, backend=backend.name
    )


def test_run_config_takes_the_strings_and_refuses_others_naming_the_setting():
    """What the launchpad sends: YAML strings. The settings see plain strings; a value outside the choices
    is refused by Dagster before the run, naming the setting's path and the choice list's name."""
    resources = {"settings": PipelineSettings(), "backend": BackendResource(name="numpy")}
    config = {
        "settings": {"config": {"dtype": "float64", "on_duplicate": "mean", "arrow_memory_pool": "system"}},
        "backend": {"config": {"name": "auto"}},
    }
    assert materialize(
        [reads_settings], resources=resources, run_config={"resources": config}, instance=DagsterInstance.ephemeral()
    ).success
    assert dict(dtype="float64", on_duplicate="mean", pool="system", backend="auto") == SEEN
    assert all(type(value) is str for value in SEEN.values())
    with pytest.raises(DagsterInvalidConfigError) as info:
        materialize(
            [reads_settings],
            resources=resources,
            instance=DagsterInstance.ephemeral(),
            run_config={"resources": {"settings": {"config": {"dtype": "float16"}}}},
        )
    assert re.search(r"root:resources:settings:config:dtype.*FloatDtype.*float16", str(info.value)), str(info.value)


DEVELOPER_NOTES = re.compile(r"\b(lock|locks|pid|pids|knobs|seed's|yield_for_execution|fsspec URL)\b", re.I)


def test_resource_descriptions_are_short_and_for_users():
    resources = top_level_resources()
    assert {"source", "backend", "settings", "store", "io_manager"} <= set(resources)
    for name, resource in resources.items():
        description = resource.description or ""
        assert description and "\n" not in description, (name, description)  # one line in the Resources tab
        assert len(description) <= 200 and description.count(". ") <= 1, (name, description)
        assert not DEVELOPER_NOTES.search(description), (name, description)
        for setting, field in resource.config_schema.config_type.fields.items():
            assert field.description and len(field.description) <= 130, (name, setting, field.description)
    assert "gs://" in resources["store"].description


def test_the_io_manager_tells_the_truth_and_refuses_values():
    io_manager = top_level_resources()["io_manager"]
    assert "pickl" not in io_manager.description.lower()
    assert "its own files" in io_manager.description and "\n" not in io_manager.description
    manager = NoValuesIOManager()
    with pytest.raises(TypeError, match=r"asset 'pca_models' returned a value \(dict\).*nothing is pickled"):
        manager.handle_output(build_output_context(asset_key=AssetKey("pca_models")), {"a": 1})
    with pytest.raises(TypeError, match=r"asset 'features' asked Dagster's io_manager to load an input"):
        manager.load_input(build_input_context(asset_key=AssetKey("features")))


def test_materialising_the_graph_never_uses_the_io_manager(demo_database, tmp_path):
    """Every asset and check of the graph, over every partition, with the io_manager of the definitions: it
    raises if called, and Dagster records no stored output and no loaded input."""
    resources = {
        **make_resources(demo_database, str(tmp_path / "artifacts")),
        "io_manager": build_definitions().resources["io_manager"],
    }
    assert isinstance(resources["io_manager"], NoValuesIOManager)
    result = testing.materialize_days(PARTITIONS[0], PARTITIONS[-1], resources=resources)
    assert result.success
    kinds = {event.event_type_value for event in result.all_events}
    assert "ASSET_MATERIALIZATION" in kinds
    assert not kinds & {"HANDLED_OUTPUT", "LOADED_INPUT"}, kinds


def test_the_code_location_loads_without_dagster_maturity_warnings():
    """What `dagster dev -w workspace.yaml` imports: no Beta/Preview/Supersession warning from our definitions,
    even with every warning shown."""
    code = (
        "import emberharmony_assets.definitions as d; d.defs.get_repository_def(); "
        "import warnings; warnings.warn('still shown', UserWarning)"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "still shown" in done.stderr  # the filters were restored after the definitions were built
    for name in DAGSTER_MATURITY_WARNINGS:
        assert name not in done.stderr, done.stderr[-3000:]


def test_every_stride_of_the_scree_plot_has_its_own_look():
    ratios = np.array([0.4, 0.3, 0.2, 0.1])
    looks = {(s["color"], s["marker"], s["linestyle"]) for s in (stride_style(i, 3) for i in range(3))}
    assert len(looks) == 3 and all(len({look[k] for look in looks}) == 3 for k in range(3))
    sizes = [stride_style(i, 3)["markersize"] for i in range(3)]
    assert sizes == sorted(sizes, reverse=True) and all(
        stride_style(i, 3)["markerfacecolor"] == "none" for i in range(3)
    )
    png = scree_plot_png({1: ratios, 3: ratios, 5: ratios})  # the strides agree: drawn on top of each other
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (640, 320) and len(png) < 80_000
