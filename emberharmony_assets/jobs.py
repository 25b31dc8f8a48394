"""Jobs and schedules.

* ``daily_partition_job``: one day's partition through every partitioned asset up to
  ``pca_stats``; its schedule runs each morning for the newest complete day.
* ``refit_job``: merges the statistics into ``pca_models`` and projects the newest
  partition; scheduled an hour after the partition job.
* ``full_refresh_job``: everything (the main job, ``python -m emberharmony_assets.main``,
  runs it over the whole partition range); a range as one run from the UI: docs/ui.md (backfill a range).
* The scale-out jobs (``emberharmony_assets.scale_out`` runs them in waves through the run queue): a job per
  pass over days, each run carrying the ``emberharmony/pass`` tag the queue's limits name, one run per day
  (``dagster job backfill``): ``ingest_job``, ``features_job`` (``features``, ``window_tails``), ``windows_job``
  (``stride_windows``, ``pca_stats``), ``projection_job``; between them one run each of ``preprocessor_job``,
  ``carry_job`` (``window_carry`` over the range: the only day-to-day step, a fold of small summaries) and
  ``pca_models_job``. ``fit_and_windows_job`` is everything after ingest as one run.

Both schedules start stopped (turning them on: docs/ui.md). Each asks for the day that ended before its
tick; once the partitions end (``EMBERHARMONY_PARTITION_END``) or before they start, the tick is skipped
with a reason instead of asking for the last (or first) day again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import (
    AssetSelection,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
)

from emberharmony_core.layout import (
    CYCLICAL,
    FEATURES,
    PCA_MODELS,
    PCA_STATS,
    PREPROCESS_STATS,
    PREPROCESSOR,
    PROJECTED,
    RAW,
    SPLIT,
    STRIDE_WINDOWS,
    WINDOW_CARRY,
    WINDOW_TAILS,
)

from .partitions import daily_partitions

INGEST_ASSETS = [RAW, SPLIT, CYCLICAL, PREPROCESS_STATS]
PARTITION_ASSETS = [*INGEST_ASSETS, FEATURES, WINDOW_TAILS, WINDOW_CARRY, STRIDE_WINDOWS, PCA_STATS]
# the run-queue tag every run of a pass over days carries: a tag_concurrency_limits entry on this key caps how many
# runs of each pass go at once (``value: {applyLimitPerUniqueValue: true}``), or of one pass (``value: ingest``)
PASS_TAG = "emberharmony/pass"
INGEST_PASS_TAG = (PASS_TAG, "ingest")

daily_partition_job = define_asset_job(
    "daily_partition_job",
    selection=AssetSelection.assets(*PARTITION_ASSETS),
    description="One day through every partitioned asset up to pca_stats (its schedule: each morning, the day that "
    "ended); needs the preprocessor and the day before's window_carry.",
)
refit_job = define_asset_job(
    "refit_job",
    selection=AssetSelection.assets(PCA_MODELS, PROJECTED),
    description="pca_models from every day's statistics, then the day's projections "
    "(its schedule: an hour after daily_partition_job).",
)
full_refresh_job = define_asset_job(
    "full_refresh_job",
    selection=AssetSelection.all(),
    description="Everything, as ONE run over a range (Partitions -> Launch backfill, or python -m "
    "emberharmony_assets.main): the fastest path on one machine; many workers: docs/scale.md.",
)
fit_and_windows_job = define_asset_job(
    "fit_and_windows_job",
    selection=AssetSelection.all() - AssetSelection.assets(*INGEST_ASSETS),
    description="Everything after the ingest pass (preprocessor, features, window_carry, stride_windows, pca_stats, "
    "pca_models, projected_windows): launch a range as one run.",
)

# the scale-out recipe's waves (emberharmony_assets.scale_out), in order: a job each, what it materialises, and how a
# range runs: "days" one run per day (a pass over days, each run tagged with its pass), "once" one run (a global
# fit), "range" one run over the range (the carry fold)
PASSES = [
    (
        "ingest_job",
        "days",
        INGEST_ASSETS,
        "The ingest pass alone: independent per day, so a backfill may run its days as separate runs "
        "at once (dagster job backfill -j ingest_job).",
    ),
    ("preprocessor_job", "once", [PREPROCESSOR], "The preprocessor alone, fitted on every day's preprocess_stats."),
    (
        "features_job",
        "days",
        [FEATURES, WINDOW_TAILS],
        "features and window_tails: independent per day (after the preprocessor), one run per day.",
    ),
    (
        "carry_job",
        "range",
        [WINDOW_CARRY],
        "window_carry, the one step that goes day after day (a fold of small "
        "per-entity summaries): launch a range as one run.",
    ),
    (
        "windows_job",
        "days",
        [STRIDE_WINDOWS, PCA_STATS],
        "stride_windows and pca_stats: independent per day once window_carry of the day before exists, "
        "one run per day.",
    ),
    ("pca_models_job", "once", [PCA_MODELS], "pca_models alone, merged from every day's pca_stats."),
    (
        "projection_job",
        "days",
        [PROJECTED],
        "projected_windows: independent per day once pca_models exists, one run per day.",
    ),
]
WAVES = [(name, kind) for name, kind, _, _ in PASSES]
# one step per run, in process: no step subprocess (seconds of imports) per run
pass_jobs = [
    define_asset_job(
        name,
        selection=AssetSelection.assets(*assets),
        executor_def=in_process_executor,
        tags={PASS_TAG: name.removesuffix("_job")} if kind == "days" else None,
        description=what,
    )
    for name, kind, assets, what in PASSES
]


def day_that_ended(context: ScheduleEvaluationContext) -> tuple[str | None, SkipReason | None]:
    """The partition key of the (UTC) day before the tick, or why there is none to run."""
    when = context.scheduled_execution_time or datetime.now(UTC)
    day = (when.astimezone(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    if daily_partitions.has_partition_key(day):
        return day, None
    first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
    if first is None or day < first:
        return None, SkipReason(f"{day} is before the first partition {first} (EMBERHARMONY_PARTITION_START)")
    end = f"{daily_partitions.end:%Y-%m-%d}" if daily_partitions.end else ""
    return None, SkipReason(
        f"{day} is after the last partition {last}: the partitions end there (EMBERHARMONY_PARTITION_END={end}), "
        "nothing new to materialise. Set EMBERHARMONY_PARTITION_END later, or empty for a set that grows every "
        "day, to keep the schedule going"
    )


@schedule(
    job=daily_partition_job, cron_schedule="0 1 * * *", execution_timezone="UTC", name="daily_partition_job_schedule"
)
def daily_partition_job_schedule(context: ScheduleEvaluationContext):
    """Materialise the day that just ended through pca_stats (skipped outside the partitions)."""
    day, skip = day_that_ended(context)
    return skip or RunRequest(run_key=day, partition_key=day)


@schedule(job=refit_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def daily_refit_schedule(context: ScheduleEvaluationContext):
    """Refit pca_models from every partition's statistics and project the newest partition."""
    day, skip = day_that_ended(context)
    return skip or RunRequest(run_key=f"refit-{day}", partition_key=day)


all_jobs = [daily_partition_job, refit_job, full_refresh_job, fit_and_windows_job, *pass_jobs]
all_schedules = [daily_partition_job_schedule, daily_refit_schedule]
