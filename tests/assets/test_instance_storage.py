"""PooledSqliteStorage (the dagster.yaml the main job writes): Dagster's SQLite files, readable by
Dagster's own default storage, engines bounded, and a wipe that leaves no connection to a deleted file."""

from __future__ import annotations

import os

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DailyPartitionsDefinition,
    EventRecordsFilter,
    ExecuteInProcessResult,
    asset,
)

from emberharmony_assets import instance_storage, testing
from emberharmony_assets.instance_storage import PooledSqliteEventLogStorage, PooledSqliteStorage
from emberharmony_assets.main import ensure_dagster_yaml

DAILY = DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-11")


@asset(partitions_def=DAILY)
def daily_numbers(context) -> int:
    context.add_output_metadata({"day": context.partition_key})
    return 1


def materialize_one(instance: DagsterInstance, day: str) -> ExecuteInProcessResult:
    """``daily_numbers`` (this module's own graph, no resources) for ``day``."""
    return testing.materialize_days(day, resources={}, instance=instance, assets=[daily_numbers])


def pooled_instance(home) -> DagsterInstance:
    """The main job's dagster.yaml in ``home`` (telemetry off: a throw-away instance)."""
    ensure_dagster_yaml(str(home))
    settings = home / "dagster.yaml"
    settings.write_text(settings.read_text().replace("enabled: true", "enabled: false"))
    return DagsterInstance.from_config(str(home))


def dagster_default_instance(home) -> DagsterInstance:
    """The same folder opened with Dagster's default storage (our dagster.yaml set aside)."""
    (home / "dagster.yaml").rename(home / "dagster.yaml.pooled")
    try:
        return DagsterInstance.from_config(str(home))
    finally:
        (home / "dagster.yaml.pooled").rename(home / "dagster.yaml")


def materialized_days(instance: DagsterInstance) -> list[str]:
    records = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey("daily_numbers"))
    )
    days = []
    for record in records:
        assert record.partition_key is not None  # daily_numbers is partitioned
        days.append(record.partition_key)
    return sorted(days)


def test_main_dagster_yaml_selects_the_pooled_storage(tmp_path):
    instance = pooled_instance(tmp_path)
    assert instance.get_ref().storage_data.class_name == PooledSqliteStorage.__name__
    assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
    instance.dispose()


def test_events_written_pooled_are_read_by_dagsters_default_storage(tmp_path):
    days = DAILY.get_partition_keys()[:4]
    with pooled_instance(tmp_path) as instance:
        results = [materialize_one(instance, day) for day in days]
        assert all(result.success for result in results)
        assert materialized_days(instance) == days
    with dagster_default_instance(tmp_path) as plain:
        assert type(plain.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert materialized_days(plain) == days
        assert len(plain.get_runs()) == len(days)
        for result in results:
            assert plain.all_logs(result.run_id) and any(
                entry.dagster_event_type == DagsterEventType.RUN_SUCCESS for entry in plain.all_logs(result.run_id)
            )


def test_open_engines_are_bounded_and_older_runs_still_read(tmp_path, monkeypatch):
    monkeypatch.setattr(instance_storage, "MAX_OPEN_SHARDS", 3)
    days = DAILY.get_partition_keys()
    with pooled_instance(tmp_path) as instance:
        run_ids = [materialize_one(instance, day).run_id for day in days]
        engines = instance.event_log_storage._engines
        assert 0 < len(engines) <= 3
        # the first run's engine was disposed long ago: reading it opens a new one, and the data is there
        assert any(entry.dagster_event_type == DagsterEventType.RUN_SUCCESS for entry in instance.all_logs(run_ids[0]))
        assert materialized_days(instance) == days


def test_wipe_closes_connections_before_deleting_files(tmp_path):
    with pooled_instance(tmp_path) as instance:
        materialize_one(instance, "2026-01-01")
        instance.wipe()
        after = materialize_one(instance, "2026-01-02")
        assert materialized_days(instance) == ["2026-01-02"]
    # the events after the wipe are in the files on disk, not in a deleted file still held open
    run_db = tmp_path / "history" / "runs" / f"{after.run_id}.db"
    assert run_db.is_file() and os.path.getsize(run_db) > 0
    with dagster_default_instance(tmp_path) as plain:
        assert materialized_days(plain) == ["2026-01-02"]


def test_dispose_closes_every_engine(tmp_path):
    instance = pooled_instance(tmp_path)
    materialize_one(instance, "2026-01-03")
    assert instance.event_log_storage._engines
    instance.dispose()
    assert not instance.event_log_storage._engines


def test_a_range_runs_batched_materialisations_are_all_stored(tmp_path, monkeypatch):
    """The main job's settings: one batch per step for a range (DAGSTER_EVENT_BATCH_SIZE), written in one
    transaction per database; every partition's materialisation is there, for Dagster's default storage too."""
    from dagster import BackfillPolicy

    from emberharmony_assets.main import DAGSTER_RANGE_SETTINGS

    for name, value in DAGSTER_RANGE_SETTINGS.items():
        monkeypatch.setenv(name, value)
    batches = []
    store_batch = PooledSqliteEventLogStorage.store_event_batch
    monkeypatch.setattr(
        PooledSqliteEventLogStorage,
        "store_event_batch",
        lambda self, events: (batches.append(len(events)), store_batch(self, events)),
    )

    @asset(partitions_def=DAILY, backfill_policy=BackfillPolicy.single_run())
    def daily_numbers(context) -> None:  # same key as the module's asset, over a range in one run
        return None

    days = DAILY.get_partition_keys()
    with pooled_instance(tmp_path) as instance:
        result = testing.materialize_days(days[0], days[-1], resources={}, instance=instance, assets=[daily_numbers])
        assert result.success
        assert max(batches) == len(days)  # the step's materialisations came as one batch
        assert materialized_days(instance) == days
        status = instance.get_status_by_partition(AssetKey("daily_numbers"), days, DAILY)
        assert {str(value) for value in status.values()} == {"AssetPartitionStatus.MATERIALIZED"}
    with dagster_default_instance(tmp_path) as plain:
        assert materialized_days(plain) == days
