"""Small helpers every asset module shares: partition windows, timing, metadata tables."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from datetime import datetime

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue

from ..partitions import daily_partitions


def partition_windows(context: AssetExecutionContext) -> list[tuple[str, datetime, datetime]]:
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


def previous_partition_key(key: str) -> "str | None":
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


def per_partition_metadata(rows: list[dict], totals: dict) -> dict:
    """One partition: its own figures. A range: totals plus a per-partition table."""
    if len(rows) == 1:
        return {**rows[0], **totals}
    return {**totals, "partitions": len(rows), "per_partition": markdown_table(rows)}
