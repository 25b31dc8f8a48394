"""Fixtures for the asset graph: a real DuckDB demo table and artifacts in a temp dir."""

from __future__ import annotations

import pytest

from emberharmony_assets import testing
from emberharmony_core.demo import DemoConfig, write_demo_table

# 24 sensors (enough distinct split keys for the fraction check), hourly, 5 days
SMALL_DEMO = DemoConfig(entities=24, days=5, cadence_minutes=60, start="2026-01-01")
PARTITIONS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]


@pytest.fixture(scope="session")
def demo_database(tmp_path_factory):
    path = tmp_path_factory.mktemp("duckdb") / "demo.duckdb"
    write_demo_table(path, SMALL_DEMO)
    return str(path)


def make_resources(database: str, artifacts: str, backend: str = "numpy", **settings) -> dict:
    """``testing.resources`` over the demo table, with 8 components unless ``settings`` say otherwise."""
    return testing.resources(database, artifacts, backend=backend, **{"n_components": 8, **settings})


@pytest.fixture
def resources(demo_database, tmp_path):
    return make_resources(demo_database, str(tmp_path / "artifacts"))
