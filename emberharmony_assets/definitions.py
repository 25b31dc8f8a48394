"""``defs``: the asset graph, its resources, checks, jobs and schedules.

The source is chosen at load time by ``EMBERHARMONY_SOURCE`` (``duckdb``, the
default, or ``bigquery``); every field of every resource can then be changed in
run config / the launchpad. ``build_definitions`` lets tests and users build the
same graph with their own resources.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Any

from dagster import ConfigurableIOManager, Definitions, InputContext, OutputContext

from emberharmony_core.demo import FEATURES

# Dagster's markers for API maturity (main.DAGSTER_MATURITY_WARNINGS; main.py has only standard-library imports
# at the top), raised while our definitions are built by features they use knowingly (backfill_policy,
# allow_nonexistent_upstream_partitions, ...). Quiet while this module builds them, so `dagster dev` prints
# none when it loads the code location; the main job quiets them for its whole process unless --verbose.
from .main import DAGSTER_MATURITY_WARNINGS


@contextmanager
def dagster_maturity_warnings_quiet():
    """Dagster's Beta / Preview / Supersession warnings ignored inside the block; the filters before it restored
    after it."""
    import dagster

    with warnings.catch_warnings():
        for name in DAGSTER_MATURITY_WARNINGS:
            category = getattr(dagster, name, None)
            if category is not None:
                warnings.filterwarnings("ignore", category=category)
        yield


with dagster_maturity_warnings_quiet():  # the assets, partitions and jobs raise them when first imported
    from .assets import all_assets
    from .jobs import all_jobs, all_schedules
    from .resources import (
        ArtifactStoreResource,
        BackendResource,
        DuckDBSourceResource,
        PipelineSettings,
        SourceResource,
        check_backend_name,
    )

DEMO_SOURCE: dict[str, Any] = dict(
    table="sensor_readings",
    timestamp_column="ts",
    entity_column="sensor_id",
    feature_columns=list(FEATURES),
    categorical_columns=["site", "status"],
    extra_columns=["maintenance", "meta", "load_next_hour"],
)
DEMO_SETTINGS: dict[str, Any] = dict(target_column="load_next_hour")


def default_source() -> SourceResource:
    kind = os.environ.get("EMBERHARMONY_SOURCE", "duckdb").strip().lower()
    if kind == "duckdb":  # DuckDB's threads for the ordered read: fewer when several runs share a machine
        threads = os.environ.get("EMBERHARMONY_DUCKDB_THREADS")
        if threads:
            return DuckDBSourceResource(**DEMO_SOURCE, threads=int(threads))
        return DuckDBSourceResource(**DEMO_SOURCE)
    if kind == "bigquery":
        from .bigquery import bigquery_source_from_env

        return bigquery_source_from_env()
    raise ValueError(f"EMBERHARMONY_SOURCE must be 'duckdb' or 'bigquery', got {kind!r}")


class NoValuesIOManager(ConfigurableIOManager):
    """Not used: each asset writes its own files (Parquet, Arrow, JSON) under the artifact store."""

    # It replaces Dagster's default io_manager, which the UI describes as storing values "using pickling":
    # the assets return MaterializeResult and read what they need from the store, so Dagster never calls an
    # IO manager for them. Should anything ever ask (an asset returning a value, an AssetIn), the run fails
    # here, naming the asset, rather than pickling a value nobody reads.

    def handle_output(self, context: OutputContext, obj) -> None:
        raise TypeError(
            f"{_asset_name(context)} returned a value ({type(obj).__name__}) for Dagster's io_manager to "
            "store: these assets write their own files under the artifact store (the store resource) "
            "and return MaterializeResult; nothing is pickled"
        )

    def load_input(self, context: InputContext):
        raise TypeError(
            f"{_asset_name(context)} asked Dagster's io_manager to load an input: these assets read "
            "their upstream files from the artifact store (the store resource); nothing is stored here"
        )


def _asset_name(context) -> str:
    key = context.asset_key if context.has_asset_key else None
    return f"asset {key.to_user_string()!r}" if key is not None else f"step output {context.name!r}"


def default_backend() -> BackendResource:
    name = os.environ.get("EMBERHARMONY_BACKEND", "auto")
    try:
        check_backend_name(name)
    except ValueError as error:  # at load, naming the variable the value came from
        raise ValueError(f"EMBERHARMONY_BACKEND: {error}") from None
    return BackendResource(name=name)


def default_resources(**overrides) -> dict:
    resources = {
        "source": default_source(),
        "backend": default_backend(),
        "settings": PipelineSettings(**DEMO_SETTINGS),
        "store": ArtifactStoreResource(),
        "io_manager": NoValuesIOManager(),
    }
    resources.update(overrides)
    return resources


def build_definitions(**resource_overrides) -> Definitions:
    with dagster_maturity_warnings_quiet():
        return Definitions(
            assets=all_assets, jobs=all_jobs, schedules=all_schedules, resources=default_resources(**resource_overrides)
        )


defs = build_definitions()
