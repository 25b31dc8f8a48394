"""Daily time-window partitions (UTC).

Start and end come from ``EMBERHARMONY_PARTITION_START`` (default 2026-01-01, the
demo's first day) and ``EMBERHARMONY_PARTITION_END`` (default 2026-04-01, the day
after the demo's last; set it to an empty string for an open-ended, growing set).
"""

from __future__ import annotations

import os

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping

PARTITION_START = os.environ.get("EMBERHARMONY_PARTITION_START", "2026-01-01")
PARTITION_END = os.environ.get("EMBERHARMONY_PARTITION_END", "2026-04-01") or None

daily_partitions = DailyPartitionsDefinition(start_date=PARTITION_START, end_date=PARTITION_END, timezone="UTC")

# "the partition before this one" (absent for the first partition): how windows continue each series
previous_partition = TimeWindowPartitionMapping(
    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
)
