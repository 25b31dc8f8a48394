"""Schedules ask for the right partition; a bad target column fails naming it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from dagster import DagsterInstance, build_schedule_context, materialize

from emberharmony_assets.assets import all_assets
from emberharmony_assets.definitions import defs

from .conftest import PARTITIONS, make_resources
from .test_configuration import failure_text


def requests_of(name: str, when: datetime):
    schedule = defs.get_schedule_def(name)
    context = build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    result = schedule.evaluate_tick(context)
    return result.run_requests


def test_daily_partition_schedule_materialises_the_day_that_just_ended():
    (request,) = requests_of("daily_partition_job_schedule", datetime(2026, 2, 10, 1, 0, tzinfo=UTC))
    assert request.partition_key == "2026-02-09"
    assert defs.get_schedule_def("daily_partition_job_schedule").job_name == "daily_partition_job"


def test_daily_refit_schedule_refits_and_projects_the_newest_day():
    (request,) = requests_of("daily_refit_schedule", datetime(2026, 2, 10, 2, 0, tzinfo=UTC))
    assert request.partition_key == "2026-02-09"
    job = defs.resolve_job_def("refit_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"pca_models", "projected_windows"}


def test_a_target_column_the_table_lacks_fails_naming_it(demo_database, tmp_path):
    resources = make_resources(demo_database, str(tmp_path / "artifacts"), target_column="churned")
    try:
        materialize(
            all_assets,
            resources=resources,
            partition_key=PARTITIONS[0],
            instance=DagsterInstance.ephemeral(),
            selection=["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"],
        )
    except Exception as error:  # noqa: BLE001 - Dagster wraps the asset's error
        assert re.search(r"churned", failure_text(error)), failure_text(error)
    else:
        raise AssertionError("a missing target column must fail preprocess_stats")
