"""What every asset module shares: the partitioned-asset arguments, the loop over a run's partitions,
timing, metadata tables, a step's figures and check results per day (``StepFigures``)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TypedDict

import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
)

from ..checks import BLOCKING as BLOCKING_CHECKS
from ..dagster_private import AssetCheckEvaluationTargetMaterializationData
from ..partitions import daily_partitions


class Partitioned(TypedDict):
    """The keyword arguments ``PARTITIONED`` gives ``@asset`` / ``@multi_asset``."""

    partitions_def: DailyPartitionsDefinition
    backfill_policy: BackfillPolicy


# every partitioned asset: daily, and a range backfill runs as ONE run that loops over its days
PARTITIONED = Partitioned(partitions_def=daily_partitions, backfill_policy=BackfillPolicy.single_run())


def selected_names(context: AssetExecutionContext) -> set[str]:
    """Names of the assets this (multi-)asset step materialises."""
    return {key.to_user_string() for key in context.selected_asset_keys}


def run_partitions(context: AssetExecutionContext) -> list[tuple[str, datetime, datetime]]:
    """(key, start, end) for every partition this run materialises, oldest first.

    A single-run backfill hands one run a whole range; assets loop over it one
    partition at a time so memory stays at one partition.
    """
    keys = sorted(context.partition_keys)
    out = []
    for key in keys:
        window = daily_partitions.time_window_for_partition_key(key)
        out.append((key, window.start, window.end))
    return out


def previous_partition_key(key: str) -> str | None:
    """The partition before ``key``, or None for the first one."""
    start = daily_partitions.time_window_for_partition_key(key).start
    previous = daily_partitions.get_prev_partition_window(start)
    return None if previous is None else previous.start.strftime(daily_partitions.fmt)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@contextmanager
def timed(metadata: dict):
    """Adds ``seconds`` and ``peak_rss_mib`` to ``metadata`` when the block ends."""
    started = time.perf_counter()
    yield metadata
    metadata["seconds"] = round(time.perf_counter() - started, 3)
    metadata["peak_rss_mib"] = peak_rss_mib()


def markdown_table(rows: list[dict]) -> MetadataValue:
    if not rows:
        return MetadataValue.md("(none)")
    return MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False))


TABLE_ROWS = 10  # per end of a range: the metadata stays the same size however long the range
RUN_PREFIX = "run_"  # a range's run-level figures: never under a day's own field names


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_partition_figures(context: AssetExecutionContext, asset_key: str, rows: list[dict], totals: dict) -> None:
    """Put each partition's OWN figures (a row of ``rows``, keyed by ``partition``) first in that partition's
    materialisation metadata (``add_asset_metadata(partition_key=...)``), so a day's page leads with that
    day, whether it was made alone or in a range. One partition: then ``totals`` (its seconds, settings).
    A range: then the run's: its figures in ``totals`` prefixed ``run_`` (its text, e.g. the backend, as it
    is), the smallest and largest figure per field and a table of the first and last partitions (the same
    on every partition of the run, so it does not grow with the range). The caller's ``MaterializeResult``
    carries no metadata of its own."""
    if not rows:
        return
    if len(rows) == 1:
        context.add_asset_metadata(
            {k: v for k, v in {**rows[0], **totals}.items() if k != "partition"},
            asset_key=asset_key,
            partition_key=rows[0]["partition"],
        )
        return
    numeric = [k for k, v in rows[0].items() if _is_number(v)]
    shown = rows if len(rows) <= 2 * TABLE_ROWS else rows[:TABLE_ROWS] + rows[-TABLE_ROWS:]
    shown_note = "all" if len(rows) <= 2 * TABLE_ROWS else f"first and last {TABLE_ROWS} of {len(rows)}"
    run = {
        "run_partitions": f"{len(rows)}: {rows[0]['partition']} .. {rows[-1]['partition']}",
        **{(f"{RUN_PREFIX}{k}" if _is_number(v) else k): v for k, v in totals.items()},
        **{
            f"{RUN_PREFIX}{k}_per_partition": f"{min(r.get(k, 0) for r in rows)} .. {max(r.get(k, 0) for r in rows)}"
            for k in numeric
        },
        "run_per_partition": markdown_table(shown),
        "run_per_partition_rows_shown": shown_note,
    }
    for row in rows:
        own = {k: v for k, v in row.items() if k != "partition"}
        context.add_asset_metadata({**own, **run}, asset_key=asset_key, partition_key=row["partition"])


class StepFigures:
    """What a step records while it runs over its partitions, for each asset it has (``totals``: per asset, in
    order, its run-level figures so far): each day's own row of figures (``add``), a day's figures summed into
    the run's (``count``) and each day's own check results (``day_check``), for the assets the step materialises
    (``selected``).

    ``timed()`` times the pass: its seconds and peak RSS go into the totals of every selected asset. ``results``
    then records each selected asset's figures per day (``record_partition_figures``) and yields its
    ``MaterializeResult`` (with the step's check results for it), then each day's check results
    (``record_day_checks``); a step with one asset calls ``record()`` and returns its own result."""

    def __init__(self, context: AssetExecutionContext, totals: dict[str, dict]):
        self.context, self.totals = context, totals
        self.selected = selected_names(context)
        self.rows: dict[str, list[dict]] = {name: [] for name in totals}
        self.day_checks: list[tuple[str, AssetCheckResult]] = []

    def _shown(self) -> list[str]:
        return [name for name in self.totals if name in self.selected]

    @contextmanager
    def timed(self):
        shown = self._shown()
        with timed(self.totals[shown[0]]) as timing:
            yield
        for name in shown[1:]:
            self.totals[name].update({k: timing[k] for k in ("seconds", "peak_rss_mib")})

    def add(self, asset_key: str, row: dict) -> None:
        self.rows[asset_key].append(row)

    def count(self, asset_key: str, figures: Mapping[str, int | float]) -> None:
        """Adds a day's ``figures`` to the asset's run totals (a figure the totals lack starts at 0)."""
        totals = self.totals[asset_key]
        for name, value in figures.items():
            totals[name] = totals.get(name, 0) + value

    def day_check(self, day: str, result: AssetCheckResult) -> None:
        self.day_checks.append((day, result))

    def record(self) -> None:
        for name in self._shown():
            record_partition_figures(self.context, name, self.rows[name], self.totals[name])

    def results(self, check_results: Mapping[str, list[AssetCheckResult]]) -> Iterator[MaterializeResult]:
        for name in self._shown():
            record_partition_figures(self.context, name, self.rows[name], self.totals[name])
            yield MaterializeResult(asset_key=name, check_results=check_results.get(name, []))
        record_day_checks(self.context, self.day_checks)


def check_target(result: AssetCheckResult) -> tuple[AssetKey, str]:
    """The asset and the check a day's result is for: the check functions of ``checks`` set both."""
    if result.asset_key is None or result.check_name is None:
        raise ValueError(f"a day's check result must name its asset_key and check_name, got {result!r}")
    return AssetKey.from_coercible(result.asset_key), result.check_name


def record_day_checks(context: AssetExecutionContext, day_results: list[tuple[str, AssetCheckResult]]) -> None:
    """Each day's own check result as that day's evaluation, pointing at that day's materialisation.

    Call after the step's ``MaterializeResult``s (the days' materialisations exist by then). Dagster plans a
    check execution per day of a run and, from a range step, records the step's one ``AssetCheckResult``
    without a partition: without these, every day's execution would read "Skipped". The step's own result
    (over all its days) still decides whether a blocking check stops what depends on the asset."""
    targets = {}  # (asset, day) -> this run's materialisation of it: one query per asset
    for asset_key in {check_target(result)[0] for _, result in day_results}:
        days = sorted({day for day, result in day_results if check_target(result)[0] == asset_key})
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, asset_partitions=days), limit=2 * len(days)
        ).records
        for record in reversed(records):  # newest last: the latest per day wins
            if record.run_id == context.run_id:
                targets[(asset_key, record.partition_key)] = AssetCheckEvaluationTargetMaterializationData(
                    run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
                )
    for day, result in day_results:
        asset_key, check_name = check_target(result)
        context.log_event(
            AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=check_name,
                passed=result.passed,
                metadata=result.metadata,
                severity=result.severity,
                description=result.description,
                partition=day,
                target_materialization_data=targets.get((asset_key, day)),
                blocking=result.check_name in BLOCKING_CHECKS,
            )
        )
