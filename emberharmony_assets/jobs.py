"""Jobs and schedules.

* ``daily_partition_job``: one day's partition through every partitioned asset up to
  ``pca_stats``; its schedule runs each morning for the newest complete day.
* ``refit_job``: merges the statistics into ``pca_models`` and projects the newest
  partition; scheduled an hour after the partition job.
* ``full_refresh_job``: everything (the main job, ``python -m emberharmony_assets.main``,
  runs it over the whole partition range); for a range, launch a backfill from the UI —
  every partitioned asset has a single-run backfill policy, so a range runs as one run
  that loops over its partitions one at a time.
* ``ingest_job`` and ``fit_and_windows_job``: the same graph cut in two for multi-run backfills
  (README "Running at scale"). ``ingest_job`` (``raw_chunk`` … ``preprocess_stats``) depends on
  nothing but the source, so its days may run as separate runs at once: ``dagster job backfill -j
  ingest_job`` submits one run per day to the instance's run queue, whose concurrency limits say
  how many run together. ``fit_and_windows_job`` (``preprocessor`` onwards) then runs the range as
  ONE run: ``stride_windows`` continues each series from the day before, so its days go in order.

Both schedules start stopped (Dagster's default): turn them on in the UI (Automation) or with
``dagster schedule start``. Each asks for the day that ended before its tick; once the partitions
end (``EMBERHARMONY_PARTITION_END``) or before they start, the tick is skipped with a reason
instead of asking for the last (or first) day again.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dagster import (AssetSelection, RunRequest, ScheduleEvaluationContext, SkipReason, define_asset_job,
                     in_process_executor, schedule)

from .partitions import daily_partitions

PARTITION_ASSETS = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats", "features", "window_tails",
                    "window_carry", "stride_windows", "pca_stats"]

daily_partition_job = define_asset_job("daily_partition_job", selection=AssetSelection.assets(*PARTITION_ASSETS))
refit_job = define_asset_job("refit_job", selection=AssetSelection.assets("pca_models", "projected_windows"))
full_refresh_job = define_asset_job("full_refresh_job", selection=AssetSelection.all())

INGEST_ASSETS = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]
# the run-queue tag a tag_concurrency_limits entry names to cap how many ingest runs go at once
INGEST_PASS_TAG = ("emberharmony/pass", "ingest")
# one step (the ingest multi-asset and its checks): in process, no step subprocess (~3 s of imports) per run
ingest_job = define_asset_job("ingest_job", selection=AssetSelection.assets(*INGEST_ASSETS),
                              executor_def=in_process_executor, tags=dict([INGEST_PASS_TAG]),
                              description="The ingest pass alone: independent per day, so a backfill may run its "
                                          "days as separate runs at once (dagster job backfill -j ingest_job).")
fit_and_windows_job = define_asset_job(
    "fit_and_windows_job", selection=AssetSelection.all() - AssetSelection.assets(*INGEST_ASSETS),
    description="Everything after the ingest pass (preprocessor, features, stride_windows, pca_stats, pca_models, "
                "projected_windows): launch a range as one run; the windows pass takes its days in order.")


def day_that_ended(context: ScheduleEvaluationContext) -> tuple[str | None, SkipReason | None]:
    """The partition key of the (UTC) day before the tick, or why there is none to run."""
    when = context.scheduled_execution_time or datetime.now(timezone.utc)
    day = (when.astimezone(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")
    if daily_partitions.has_partition_key(day):
        return day, None
    first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
    if first is None or day < first:
        return None, SkipReason(f"{day} is before the first partition {first} (EMBERHARMONY_PARTITION_START)")
    end = f"{daily_partitions.end:%Y-%m-%d}" if daily_partitions.end else ""
    return None, SkipReason(
        f"{day} is after the last partition {last}: the partitions end there (EMBERHARMONY_PARTITION_END={end}), "
        "nothing new to materialise. Set EMBERHARMONY_PARTITION_END later, or empty for a set that grows every "
        "day, to keep the schedule going")


@schedule(job=daily_partition_job, cron_schedule="0 1 * * *", execution_timezone="UTC",
          name="daily_partition_job_schedule")
def daily_partition_job_schedule(context: ScheduleEvaluationContext):
    """Materialise the day that just ended through pca_stats (skipped outside the partitions)."""
    day, skip = day_that_ended(context)
    return skip or RunRequest(run_key=day, partition_key=day)


@schedule(job=refit_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def daily_refit_schedule(context: ScheduleEvaluationContext):
    """Refit pca_models from every partition's statistics and project the newest partition."""
    day, skip = day_that_ended(context)
    return skip or RunRequest(run_key=f"refit-{day}", partition_key=day)


all_jobs = [daily_partition_job, refit_job, full_refresh_job, ingest_job, fit_and_windows_job]
all_schedules = [daily_partition_job_schedule, daily_refit_schedule]
