"""Jobs and schedules.

* ``daily_partition_job``: one day's partition through every partitioned asset up to
  ``pca_stats``; its schedule runs each morning for the newest complete day.
* ``refit_job``: merges the statistics into ``pca_models`` and projects the newest
  partition; scheduled an hour after the partition job.
* ``full_refresh_job``: everything (the main job); for a range, launch a backfill
  from the UI — every partitioned asset has a single-run backfill policy, so a
  range runs as one run that loops over its partitions one at a time.
"""


from datetime import timedelta

from dagster import AssetSelection, RunRequest, ScheduleEvaluationContext, SkipReason, build_schedule_from_partitioned_job, \
    define_asset_job, schedule

from .partitions import daily_partitions

PARTITION_ASSETS = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats", "features",
                    "stride_windows", "pca_stats"]

daily_partition_job = define_asset_job("daily_partition_job", selection=AssetSelection.assets(*PARTITION_ASSETS))
refit_job = define_asset_job("refit_job", selection=AssetSelection.assets("pca_models", "projected_windows"))
full_refresh_job = define_asset_job("full_refresh_job", selection=AssetSelection.all())

daily_partition_schedule = build_schedule_from_partitioned_job(daily_partition_job, hour_of_day=1, minute_of_hour=0)


@schedule(job=refit_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def daily_refit_schedule(context: ScheduleEvaluationContext):
    """Refit pca_models from every partition's statistics and project the newest partition."""
    day_before = context.scheduled_execution_time - timedelta(days=1)
    newest = daily_partitions.get_partition_key_for_timestamp(day_before.timestamp())
    if not daily_partitions.has_partition_key(newest):
        return SkipReason(f"{newest} is outside the partitions ({daily_partitions.start:%Y-%m-%d} onwards)")
    return RunRequest(run_key=f"refit-{newest}", partition_key=newest)


all_jobs = [daily_partition_job, refit_job, full_refresh_job]
all_schedules = [daily_partition_schedule, daily_refit_schedule]
