"""The DuckDB source's ordered read sorts with a set number of threads, not the machine's cores.

Each sorting thread needs part of ``memory_limit``: with DuckDB's default (one thread per core) a
million-row window that sorts in 128MB with 2 threads fails with 16, so a 16-core laptop would fail
where this 2-core machine passes. A real DuckDB file; no mocks."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import duckdb
import pytest
from dagster import DagsterInstance

from emberharmony_assets.resources import DuckDBSourceResource
from emberharmony_core.sources.base import TableSpec
from emberharmony_core.sources.duckdb_source import DuckDBTableReader

START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)


def million_row_day(path: str, day: str) -> str:
    """A DuckDB file at ``path`` with table t: 1,000,000 rows of 5,000 entities at random times of ``day``."""
    with duckdb.connect(path) as connection:
        connection.execute(
            "CREATE TABLE t AS SELECT 'entity_' || (i % 5000)::VARCHAR AS entity, "
            f"TIMESTAMPTZ '{day} 00:00:00+00' + to_microseconds((random() * 86400e6)::BIGINT) AS ts, "
            "random() AS f, repeat('x', 40) AS pad FROM range(1000000) r(i)"
        )
    return path


@pytest.fixture(scope="module")
def million_rows(tmp_path_factory) -> str:
    return million_row_day(str(tmp_path_factory.mktemp("threads") / "million.duckdb"), "2024-03-01")


def source(database: str, **settings) -> DuckDBSourceResource:
    return DuckDBSourceResource(
        database=database,
        table="t",
        timestamp_column="ts",
        entity_column="entity",
        feature_columns=["f"],
        extra_columns=["pad"],
        **settings,
    )


def read_rows(resource: DuckDBSourceResource) -> tuple[int, str]:
    with resource.open_reader() as reader:
        rows = sum(len(chunk) for chunk in reader.iter_window(START, END, rows_per_chunk=100_000))
        with reader._connect() as connection:
            threads = connection.execute("SELECT current_setting('threads')").fetchone()[0]
    return rows, str(threads)


def test_the_default_read_uses_two_threads_and_fits_128mb(million_rows):
    rows, threads = read_rows(source(million_rows))
    assert (rows, threads) == (1_000_000, "2")


def test_more_threads_than_the_limit_feeds_fail_naming_both_settings(million_rows):
    with pytest.raises(
        MemoryError,
        match=r"memory_limit \(122\.0 MiB\) with 16 threads, sorting t from 2024-03-01.*"
        r"raise the DuckDB source's memory_limit or lower its threads",
    ):
        read_rows(source(million_rows, threads=16))
    rows, threads = read_rows(source(million_rows, threads=16, memory_limit="1GB"))  # what the message advises
    assert (rows, threads) == (1_000_000, "16")


@pytest.mark.parametrize("threads", [0, -1])
def test_threads_below_one_fail_naming_the_setting(million_rows, threads):
    with pytest.raises(ValueError, match=rf"DuckDB source threads must be a whole number >= 1, got {threads}"):
        read_rows(source(million_rows, threads=threads))


@pytest.mark.parametrize("memory_limit", ["lots", "128 apples", ""])
def test_a_memory_limit_duckdb_cannot_read_fails_naming_the_setting(million_rows, memory_limit):
    """Not DuckDB's bare 'Parser Error: Memory must have a number', which names neither the setting nor the source."""
    with pytest.raises(ValueError, match=rf"DuckDB source memory_limit {memory_limit!r} is not a size DuckDB accepts"):
        read_rows(source(million_rows, memory_limit=memory_limit))


def test_the_core_reader_alone_has_the_same_bounded_defaults(million_rows):
    """Without Dagster, ``DuckDBTableReader``'s own connection: 2 threads in 128MB (not DuckDB's 80% of memory
    and one thread per core), and the same message when a setting is too small for the read."""
    spec = TableSpec(
        table="t", timestamp_column="ts", entity_column="entity", feature_columns=("f",), extra_columns=("pad",)
    )
    reader = DuckDBTableReader(million_rows, spec)
    assert sum(len(chunk) for chunk in reader.iter_window(START, END, rows_per_chunk=100_000)) == 1_000_000
    with reader._connect() as connection:
        settings = connection.execute("SELECT current_setting('threads'), current_setting('memory_limit')").fetchone()
    assert settings == (2, "122.0 MiB")
    with pytest.raises(MemoryError, match=r"with 16 threads, sorting t .*lower its threads"):
        list(DuckDBTableReader(million_rows, spec, threads=16).iter_window(START, END, rows_per_chunk=100_000))
    # at the default 2 threads a sort that runs out before the first row goes once more on one thread (40MB: 2
    # threads always ran out up to 52MB here, 1 thread never down to 32MB), and the stream says so; too small
    # for one thread: raise the limit
    stream = DuckDBTableReader(million_rows, spec, memory_limit="40MB").iter_window(START, END, rows_per_chunk=100_000)
    assert sum(len(chunk) for chunk in stream) == 1_000_000
    assert stream.metadata["duckdb_single_thread_retries"] == 1
    with pytest.raises(
        MemoryError,
        match=r"with 1 thread \(after the configured threads had too\), sorting t .*raise the DuckDB source's "
        r"memory_limit \(DuckDB",
    ):
        list(DuckDBTableReader(million_rows, spec, memory_limit="4MB").iter_window(START, END))
    with pytest.raises(ValueError, match=r"threads must be a whole number >= 1, got 0"):
        DuckDBTableReader(million_rows, spec, threads=0)


def test_raw_chunk_counts_a_read_done_again_on_one_thread_and_the_run_log_says_so(tmp_path):
    """Through Dagster: a day whose sort does not fit the source's memory_limit at the default 2 threads is read
    again on one thread; raw_chunk's metadata for the day counts it and the run logs a warning naming the fix."""
    from emberharmony_assets import testing

    path = million_row_day(str(tmp_path / "day.duckdb"), "2026-01-01")
    resources = testing.resources(
        source(path, memory_limit="40MB"), tmp_path / "artifacts"
    )  # 2 threads always ran out at 40MB (up to 52MB) on this table, 1 thread never (down to 32MB)
    instance = DagsterInstance.ephemeral()
    result = testing.materialize_days("2026-01-01", resources=resources, selection=["raw_chunk"], instance=instance)
    assert result.success
    figures = testing.day_figures(result, "raw_chunk", "2026-01-01")
    assert figures["rows"] == 1_000_000 and figures["duckdb_single_thread_retries"] == 1
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]
    assert any("read again on one thread; raise memory_limit" in message for message in warnings), warnings
