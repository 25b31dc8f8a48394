"""The schedules ask for the day that just ended, and skip (with a reason) outside the partitions:
once the partitions end they do not ask for the last day again every night."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from dagster import build_schedule_context

from emberharmony_assets.definitions import defs
from emberharmony_assets.partitions import daily_partitions

SCHEDULES = {"daily_partition_job_schedule": 1, "daily_refit_schedule": 2}  # name: hour of the tick (UTC)


def tick(name: str, day: str):
    """The schedule's tick on ``day`` at its hour: (run requests, skip message)."""
    when = datetime.combine(datetime.fromisoformat(day).date(), time(SCHEDULES[name]), tzinfo=UTC)
    context = build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    result = defs.get_schedule_def(name).evaluate_tick(context)
    return result.run_requests or [], result.skip_message


def day_after(key: str, days: int = 1) -> str:
    return (datetime.fromisoformat(key) + timedelta(days=days)).strftime("%Y-%m-%d")


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_the_last_partition_runs_once_then_ticks_are_skipped_with_a_reason(name):
    first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
    requests, skipped = tick(name, day_after(last))  # the morning after the last day
    assert [r.partition_key for r in requests] == [last] and skipped is None
    for later in (2, 3, 30):
        requests, skipped = tick(name, day_after(last, later))
        assert requests == [], (later, requests)
        assert f"after the last partition {last}" in skipped and "EMBERHARMONY_PARTITION_END" in skipped
    requests, skipped = tick(name, first)  # the morning of the first day: no day has ended yet
    assert requests == [] and f"before the first partition {first}" in skipped
    requests, _ = tick(name, day_after(first))
    assert [r.partition_key for r in requests] == [first]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_day_gets_its_own_run_key(name):
    first = daily_partitions.get_first_partition_key()
    keys = [tick(name, day_after(first, d))[0][0].run_key for d in (1, 2)]
    assert len(set(keys)) == 2
