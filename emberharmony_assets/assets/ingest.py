"""raw_chunk -> split_data -> cyclical_features -> preprocess_stats: one streaming pass per partition.

One multi-asset reads the source once, chunk by chunk (``settings.rows_per_chunk`` rows), and each
chunk goes through every selected step: raw_chunk writes the source columns, split_data the
``split`` column, cyclical_features its sin/cos columns (each file row-aligned, Parquet row groups
written as the chunks come), preprocess_stats accumulates the train rows' statistics. Selecting a
subset starts from the first selected asset and reads what comes before it from its artifacts.

Rows read from the source first go through ``emberharmony_core.features.row_checks.RowChecker``: a NULL
entity id, a +-inf or overflowing numeric feature value (any split) and, under ``settings.on_duplicate``
'error' (the default), a duplicate (entity, timestamp) key fail the partition with one error naming the
partition and the culprits, before anything of it is kept (its files are temporary until the partition
ends); 'keep_last' / 'mean' leave one row per key, counted in raw_chunk's metadata (``duplicate_keys``,
``duplicate_rows_dropped`` / ``duplicate_rows_merged``), and every later step sees those rows. Rows
whose timestamp is NULL are never read: the window query ``ts >= start AND ts < end`` excludes them.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetSpec, multi_asset

from emberharmony_core.features.cyclical import CYCLICAL_SUFFIXES
from emberharmony_core.features.cyclical import cyclical_features as add_cyclical_features
from emberharmony_core.features.preprocess import PreprocessStats, compute_partition_stats
from emberharmony_core.features.row_checks import RowChecker
from emberharmony_core.features.split import SplitKeySample, assign_split, distinct_keys
from emberharmony_core.features.split_blocks import split_block_keys
from emberharmony_core.layout import CYCLICAL, PREPROCESS_STATS, RAW, SPLIT, iter_asset_frames, save_preprocess_stats
from emberharmony_core.names import SPLIT_NAMES
from emberharmony_core.sources.spec import TableSpec
from emberharmony_core.store import ArtifactStore

from .. import checks
from ..resources import ArtifactStoreResource, BackendResource, PipelineSettings, SourceResource
from ._common import PARTITIONED, StepFigures, run_partitions, selected_names
from .preprocessing import preprocess_config

STEPS = [RAW, SPLIT, CYCLICAL, PREPROCESS_STATS]
WRITTEN = (RAW, SPLIT, CYCLICAL)  # the steps whose columns go to Parquet, row-aligned
SPLITS = SPLIT_NAMES
EMPTY_DAY = "the source has no rows in this day: every entity's series goes on across it"
SPLIT_SCHEMA = pa.schema([("split", pa.string())])
READ_FIGURES = ("bytes_read", "bytes_processed", "bytes_billed", "pages", "chunks", "duckdb_single_thread_retries")


def split_keys(
    frame,
    key_column: str | None,
    partition_key: str,
    timestamp_column: str | None = None,
    split_block: str | None = None,
) -> np.ndarray:
    """The values hashed for the split: the key column; without one, the time block of each row
    (``settings.split_block``, e.g. "7d" = ISO weeks keyed by their Monday) or else the partition date."""
    if key_column is None:
        if split_block is not None:
            return split_block_keys(frame[timestamp_column], split_block)
        return np.full(len(frame), partition_key, dtype=object)
    return frame[key_column].to_numpy()


def source_chunks(stream, columns: list[str]):
    """The stream's chunks; an empty window gives one empty frame with the columns (so every file is written)."""
    empty = True
    for chunk in stream:
        empty = False
        yield chunk
    if empty:
        make_empty = getattr(stream, "empty_frame", None)
        yield make_empty() if make_empty is not None else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


@multi_asset(
    name="ingest",
    specs=[
        AssetSpec(
            RAW,
            group_name="ingest",
            kinds={"duckdb", "bigquery", "parquet"},
            description="Rows whose timestamp lies in the partition's day, read with one parameterised query "
            "(ordered by entity, then time) and streamed in chunks; the source columns. The whole "
            "graph over a range in ONE run: Jobs > full_refresh_job > Partitions > Launch backfill "
            "(Materialize all here runs it in waves, several runs).",
        ),
        AssetSpec(
            SPLIT,
            deps=[RAW],
            group_name="ingest",
            kinds={"parquet"},
            description="Each row's split (train / validation / test) from FARM_FINGERPRINT of the split key; "
            "stores the split column, row-aligned with raw_chunk.",
        ),
        AssetSpec(
            CYCLICAL,
            deps=[SPLIT],
            group_name="ingest",
            kinds={"parquet"},
            description="8 sin/cos columns per datetime column (periods 24 h, 7 days, days in the month, "
            "12 months); stores those columns, row-aligned with raw_chunk.",
        ),
        AssetSpec(
            PREPROCESS_STATS,
            deps=[CYCLICAL],
            group_name="preprocessing",
            kinds={"json"},
            description="Mergeable statistics of the partition's TRAIN rows: moments, nulls, categories, "
            "median sketches.",
        ),
    ],
    check_specs=[
        checks.spec(
            SPLIT, checks.SPLIT_FRACTIONS, "The share of distinct split keys per split is near the configured fraction."
        ),
        checks.spec(CYCLICAL, checks.CYCLICAL_RANGE, "Every sin/cos value is finite and within [-1, 1]."),
    ],
    can_subset=True,
    **PARTITIONED,
)
def ingest(
    context: AssetExecutionContext,
    source: SourceResource,
    settings: PipelineSettings,
    backend: BackendResource,
    store: ArtifactStoreResource,
):
    """Read each partition once and materialise every selected step chunk by chunk."""
    source.validate_settings(settings)  # bad settings or a schema that does not fit fail here, before any write
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    plan = IngestPlan(source, settings, compute, spec, selected_names(context))
    figures = IngestFigures(context, plan, source_name=type(source).__name__)
    key_column, fractions = plan.key_column, tuple(settings.split_fractions)
    reader_context = source.open_reader(key_column, fractions) if plan.from_source else nullcontext()
    with figures.timed(), reader_context as reader:
        for key, start, end in run_partitions(context):
            day = IngestDay(plan, key, figures.split_sample)
            # from the source, its rows checked before anything of the day is kept; else the step before's files
            chunks = day.read_source(reader, start, end) if reader is not None else day.read_artifacts(artifacts)
            with day.open_files(artifacts):  # each selected step's file, written as the chunks come
                for chunk in chunks:
                    day.write_raw(chunk)
                    chunk = day.split(chunk)
                    chunk = day.add_cyclical(chunk)
                    day.add_stats(chunk)
                    chunk = None  # not held while the next chunk is read: one chunk in memory, not two
            day.save_stats(artifacts)
            figures.add_day(day)
    yield from figures.results(figures.run_checks())


class IngestPlan:
    """What the run does to each chunk: the steps from the first selected asset on (those before it are read
    from their files), the split key, whether the source computed the split and cyclical columns itself
    (pushdown), the cyclical columns and the preprocessing config."""

    def __init__(
        self, source: SourceResource, settings: PipelineSettings, compute, spec: TableSpec, selected: set[str]
    ):
        self.settings, self.compute, self.spec, self.selected = settings, compute, spec, selected
        self.steps = STEPS[min(STEPS.index(name) for name in selected) :]
        self.from_source = self.steps[0] == RAW
        self.pushdown = self.from_source and source.computes_split_and_cyclical()
        self.key_column = settings.split_key or source.entity_column
        if self.pushdown and self.key_column is None:
            raise ValueError(
                "source pushdown needs a split key column: set settings.split_key or source.entity_column "
                "(a split by partition date is computed locally: turn pushdown off)"
            )
        self.config = preprocess_config(spec, settings)
        self.datetime_columns = spec.datetime_columns or ()  # TableSpec fills in the timestamp column when not given
        self.cyclical_names = [f"{c}_{suffix}" for c in self.datetime_columns for suffix in CYCLICAL_SUFFIXES]


class IngestDay:
    """One partition through the pass, chunk by chunk: each step of the plan applied, each selected step's
    columns written, and the day's figures: its rows, rows per split, the splits of a sample of its split keys
    (also added to the run's sample, ``run_sample``), bad cyclical values per column, its train statistics."""

    def __init__(self, plan: IngestPlan, key: str, run_sample: SplitKeySample):
        self.plan, self.key, self.run_sample = plan, key, run_sample
        self.rows = 0
        self.split_counts = dict.fromkeys(SPLITS, 0)
        self.split_sample = SplitKeySample()
        self.bad_cyclical = np.zeros(len(plan.cyclical_names), dtype=np.int64)
        self.stats: PreprocessStats | None = None
        self.stream: Any = None  # the source's stream of the day (from the source only)
        self.row_checker: RowChecker | None = None
        self.writers: dict[str, Any] = {}  # the selected steps' writers, while ``open_files`` is open

    def read_source(self, reader, start, end) -> Iterator[pd.DataFrame]:
        """The day's rows from the source, checked as they come: NULL entities, +-inf / overflowing feature
        values and duplicate (entity, ts) keys fail the day before anything of it is kept; duplicates per
        settings.on_duplicate."""
        spec, settings = self.plan.spec, self.plan.settings
        self.stream = reader.iter_window(start, end, settings.rows_per_chunk)
        self.row_checker = RowChecker(
            self.key,
            spec.timestamp_column,
            spec.entity_column,
            spec.feature_columns,
            dtype=settings.dtype,
            on_duplicate=settings.on_duplicate,
        )
        return self.row_checker.check(source_chunks(self.stream, spec.columns))

    def read_artifacts(self, artifacts: ArtifactStore) -> Iterator[pd.DataFrame]:
        """The day's rows as the steps before the first selected one stored them."""
        before = STEPS[STEPS.index(self.plan.steps[0]) - 1]
        return iter_asset_frames(artifacts, before, self.key, self.plan.settings.rows_per_chunk)

    @contextmanager
    def open_files(self, artifacts: ArtifactStore):
        """The selected steps' files of the day, open for the block (kept only if it ends without an error)."""
        with ExitStack() as files:
            # columns pandas cannot type (an empty day's, an all-NULL chunk's) get the source's types
            types = {SPLIT: SPLIT_SCHEMA}
            self.writers = {
                name: files.enter_context(artifacts.frame_writer(name, self.key, types=types.get(name)))
                for name in WRITTEN
                if name in self.plan.selected
            }
            yield
        self.writers = {}

    def write_raw(self, chunk: pd.DataFrame) -> None:
        """Counts the chunk's rows; writes the source columns when raw_chunk is selected."""
        self.rows += len(chunk)
        if RAW in self.writers:
            self.writers[RAW].types = self.stream.arrow_schema  # known once the query ran
            self.writers[RAW].write(chunk[self.plan.spec.columns])

    def split(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """The chunk with its ``split`` column (from the split keys' hash); written and counted when split_data
        is selected."""
        plan = self.plan
        if SPLIT not in plan.steps:
            return chunk
        settings = plan.settings
        keys = split_keys(chunk, plan.key_column, self.key, plan.spec.timestamp_column, settings.split_block)
        if not plan.pushdown:  # else BigQuery computed it with the same hash
            chunk["split"] = assign_split(keys, tuple(settings.split_fractions))
        if SPLIT in self.writers:
            self.writers[SPLIT].write(chunk[["split"]])
            self.count_splits(keys, chunk["split"])
        return chunk

    def count_splits(self, keys: np.ndarray, splits: pd.Series) -> None:
        distinct, key_splits, rows = distinct_keys(keys, splits.to_numpy())  # a key's rows share its split
        self.run_sample.add_distinct(distinct, key_splits)
        self.split_sample.add_distinct(distinct, key_splits)
        for split in self.split_counts:
            self.split_counts[split] += int(rows[key_splits == split].sum())

    def add_cyclical(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """The chunk with its sin/cos columns; written and checked when cyclical_features is selected."""
        plan = self.plan
        if CYCLICAL not in plan.steps:
            return chunk
        names, dtype = plan.cyclical_names, plan.settings.dtype
        if plan.pushdown:  # BigQuery computed them (float64): the settings' dtype, as computed here
            chunk[names] = chunk[names].astype(dtype)
        else:
            for column in plan.datetime_columns:
                chunk = add_cyclical_features(chunk, column, plan.compute, dtype=dtype)
        if CYCLICAL in self.writers:
            self.writers[CYCLICAL].write(chunk[names])
            self.bad_cyclical += checks.count_bad_values(chunk[names].to_numpy(), bound=1.0)
        return chunk

    def add_stats(self, chunk: pd.DataFrame) -> None:
        """Merges the chunk's train statistics into the day's, when preprocess_stats is selected."""
        if PREPROCESS_STATS in self.plan.selected:
            part = compute_partition_stats(chunk, self.plan.config)
            self.stats = part if self.stats is None else self.stats.merge(part)

    def save_stats(self, artifacts: ArtifactStore) -> None:
        if PREPROCESS_STATS in self.plan.selected:
            assert self.stats is not None, "every partition reads at least one chunk (an empty day: one empty frame)"
            save_preprocess_stats(artifacts, self.key, self.stats)


class IngestFigures(StepFigures):
    """``StepFigures`` for the ingest's four assets, and what their run-level checks read: the splits of a
    bounded sample of the run's distinct split keys (split fractions) and the bad cyclical values per column."""

    def __init__(self, context: AssetExecutionContext, plan: IngestPlan, source_name: str):
        settings = plan.settings
        super().__init__(
            context,
            {
                RAW: {
                    "rows": 0,
                    "source": source_name,
                    "pushdown": plan.pushdown,
                    "on_duplicate": settings.on_duplicate,
                },
                SPLIT: {"rows": 0, "split_key": split_key_text(plan.key_column, settings.split_block)},
                CYCLICAL: {
                    "rows": 0,
                    "backend": plan.compute.name,
                    "datetime_columns": ", ".join(plan.datetime_columns),
                },
                PREPROCESS_STATS: {"train_rows": 0},
            },
        )
        self.plan = plan
        self.split_sample = SplitKeySample()
        self.bad_cyclical = np.zeros(len(plan.cyclical_names), dtype=np.int64)

    def add_day(self, day: IngestDay) -> None:
        """The day's own figures and check results, for each selected asset, and its share of the run's."""
        if PREPROCESS_STATS in self.selected:
            self.add_stats_day(day)
        if RAW in self.selected:
            self.add_raw_day(day)
        if SPLIT in self.selected:
            self.add(SPLIT, {"partition": day.key, "rows": day.rows, **day.split_counts})
            self.count(SPLIT, {"rows": day.rows, **{f"{split}_rows": n for split, n in day.split_counts.items()}})
        if CYCLICAL in self.selected:
            self.add(CYCLICAL, {"partition": day.key, "rows": day.rows})
            self.count(CYCLICAL, {"rows": day.rows})
            self.bad_cyclical += day.bad_cyclical
            self.day_check(day.key, self.cyclical_check(day.bad_cyclical, day.rows))
        if SPLIT in self.selected:  # the day's checks as they always came: cyclical_features', then split_data's
            self.day_check(day.key, self.split_check(day.split_sample))

    def add_stats_day(self, day: IngestDay) -> None:
        assert day.stats is not None  # saved by then
        train_rows = int(day.stats.n_train_rows)
        self.add(PREPROCESS_STATS, {"partition": day.key, "train_rows": train_rows})
        self.count(PREPROCESS_STATS, {"train_rows": train_rows})

    def add_raw_day(self, day: IngestDay) -> None:
        """raw_chunk's figures of the day: its rows, what the row checks found, what reading cost."""
        assert day.row_checker is not None  # raw_chunk reads the source
        read = {k: v for k, v in day.stream.metadata.items() if k in READ_FIGURES and v is not None}
        found = day.row_checker.metadata()
        empty = {"empty_day": EMPTY_DAY} if not day.rows else {}
        self.add(RAW, {"partition": day.key, "rows": day.rows, **found, **read, **empty})
        self.count(RAW, {"rows": day.rows, **read, **found})
        note = duplicates_note(day.key, day.row_checker, day.rows, self.plan.settings.on_duplicate)
        if note:  # a log line is an event-log write: only when there is something to say
            self.context.log.info(note)
        if read.get("duckdb_single_thread_retries"):
            self.context.log.warning(
                f"raw_chunk {day.key}: DuckDB's sort ran out of the source's memory_limit at its default threads and "
                "was read again on one thread; raise memory_limit to keep the default threads"
            )

    def cyclical_check(self, bad: np.ndarray, n_rows: int) -> AssetCheckResult:
        # NaT in a datetime column gives NaN features by design (imputed later): a warning, not an error
        return checks.finite_features_check(
            bad, n_rows, self.plan.cyclical_names, checks.CYCLICAL_RANGE, AssetCheckSeverity.WARN, asset_key=CYCLICAL
        )

    def split_check(self, sample: SplitKeySample) -> AssetCheckResult:
        return checks.split_fractions_check(sample, self.plan.settings.split_fractions, asset_key=SPLIT)

    def run_checks(self) -> dict[str, list[AssetCheckResult]]:
        """The selected assets' check results over the run's days."""
        results: dict[str, list[AssetCheckResult]] = {}
        if SPLIT in self.selected:
            results[SPLIT] = [self.split_check(self.split_sample)]
        if CYCLICAL in self.selected:
            results[CYCLICAL] = [self.cyclical_check(self.bad_cyclical, self.totals[CYCLICAL]["rows"])]
        return results


def split_key_text(key_column: str | None, split_block: str | None) -> str:
    """What the split hashes, for split_data's metadata."""
    return key_column or (f"time block {split_block}" if split_block else "partition date")


def duplicates_note(key: str, row_checker: RowChecker, rows: int, on_duplicate: str) -> str | None:
    """The log line for the duplicate rows the row checks removed from the day, if any."""
    merged = row_checker.rows_in - row_checker.rows_out
    if not merged:
        return None
    return f"raw_chunk {key}: {merged:,} duplicate rows removed (on_duplicate={on_duplicate}), {rows:,} rows kept"
