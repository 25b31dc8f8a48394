"""Dagster's private API is used in one module, ``emberharmony_assets.dagster_private``, checked against one
Dagster minor version: an upgrade fails here first, naming that module."""

from __future__ import annotations

import re
from pathlib import Path

import dagster

from emberharmony_assets import dagster_private

PACKAGE = Path(dagster_private.__file__).parent


def test_the_installed_dagster_is_the_version_the_private_names_were_checked_against():
    installed = ".".join(dagster.__version__.split(".")[:2])
    assert installed == dagster_private.SUPPORTED_DAGSTER, (
        f"Dagster {dagster.__version__} is installed; emberharmony_assets/dagster_private.py was checked against "
        f"{dagster_private.SUPPORTED_DAGSTER}.*: check each of its names against this version, then update "
        "SUPPORTED_DAGSTER and pyproject's pin"
    )


def test_every_private_name_resolves():
    missing = [name for name in dagster_private.__all__ if getattr(dagster_private, name, None) is None]
    assert not missing, missing
    assert dagster_private.ASSET_PARTITION_RANGE_START_TAG == "dagster/asset_partition_range_start"


def test_no_other_module_of_the_package_imports_dagsters_private_modules():
    private = re.compile(r"^\s*(from|import)\s+(dagster\._|dagster_shared\b)", re.MULTILINE)
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "dagster_private.py" and private.search(path.read_text())
    ]
    assert not offenders, offenders
