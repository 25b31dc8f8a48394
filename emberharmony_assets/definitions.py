"""``defs``: the asset graph, its resources, checks, jobs and schedules.

The source is chosen at load time by ``EMBERHARMONY_SOURCE`` (``duckdb``, the
default, or ``bigquery``); every field of every resource can then be changed in
run config / the launchpad. ``build_definitions`` lets tests and users build the
same graph with their own resources.
"""

from __future__ import annotations

import os

from dagster import Definitions

from emberharmony_core.demo import FEATURES

from .assets import all_assets
from .jobs import all_jobs, all_schedules
from .resources import ArtifactStoreResource, BackendResource, DuckDBSourceResource, PipelineSettings, SourceResource

DEMO_SOURCE = dict(
    table="sensor_readings",
    timestamp_column="ts",
    entity_column="sensor_id",
    feature_columns=list(FEATURES),
    categorical_columns=["site", "status"],
    extra_columns=["maintenance", "meta", "load_next_hour"],
)
DEMO_SETTINGS = dict(target_column="load_next_hour")


def default_source() -> SourceResource:
    kind = os.environ.get("EMBERHARMONY_SOURCE", "duckdb").strip().lower()
    if kind == "duckdb":  # DuckDB's threads for the ordered read: fewer when several runs share a machine
        threads = os.environ.get("EMBERHARMONY_DUCKDB_THREADS")
        return DuckDBSourceResource(**DEMO_SOURCE, **({"threads": int(threads)} if threads else {}))
    if kind == "bigquery":
        from .bigquery import bigquery_source_from_env

        return bigquery_source_from_env()
    raise ValueError(f"EMBERHARMONY_SOURCE must be 'duckdb' or 'bigquery', got {kind!r}")


def default_resources(**overrides) -> dict:
    resources = {
        "source": default_source(),
        "backend": BackendResource(name=os.environ.get("EMBERHARMONY_BACKEND", "auto")),
        "settings": PipelineSettings(**DEMO_SETTINGS),
        "store": ArtifactStoreResource(),
    }
    resources.update(overrides)
    return resources


def build_definitions(**resource_overrides) -> Definitions:
    return Definitions(assets=all_assets, jobs=all_jobs, schedules=all_schedules,
                       resources=default_resources(**resource_overrides))


defs = build_definitions()
