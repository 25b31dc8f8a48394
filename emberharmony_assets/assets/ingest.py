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

from contextlib import ExitStack, nullcontext

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import AssetCheckSeverity, AssetExecutionContext, AssetSpec, MaterializeResult, multi_asset

from emberharmony_core.features.cyclical import CYCLICAL_SUFFIXES
from emberharmony_core.features.cyclical import cyclical_features as add_cyclical_features
from emberharmony_core.features.preprocess import PreprocessStats, compute_partition_stats
from emberharmony_core.features.row_checks import RowChecker
from emberharmony_core.features.split import SplitKeySample, assign_split
from emberharmony_core.features.split_blocks import split_block_keys
from emberharmony_core.layout import CYCLICAL, RAW, SPLIT, iter_asset_frames
from emberharmony_core.names import SPLIT_NAMES

from .. import checks
from ..resources import ArtifactStoreResource, BackendResource, PipelineSettings, SourceResource
from ._common import PARTITIONED, record_day_checks, record_partition_figures, run_partitions, selected_names, timed
from .preprocessing import preprocess_config

STEPS = [RAW, SPLIT, CYCLICAL, "preprocess_stats"]
SPLITS = SPLIT_NAMES
EMPTY_DAY = "the source has no rows in this day: every entity's series goes on across it"
SPLIT_SCHEMA = pa.schema([("split", pa.string())])
READ_FIGURES = ("bytes_read", "bytes_processed", "bytes_billed", "pages", "chunks")


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
            "preprocess_stats",
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
# Complexity: one linear pass per day (read, split, cyclical, stats), one if per selected step and its figures.
def ingest(  # noqa: C901
    context: AssetExecutionContext,
    source: SourceResource,
    settings: PipelineSettings,
    backend: BackendResource,
    store: ArtifactStoreResource,
):
    """Read each partition once and materialise every selected step chunk by chunk."""
    source.validate_settings(settings)  # bad settings or a schema that does not fit fail here, before any write
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    selected = selected_names(context)
    steps = STEPS[min(STEPS.index(name) for name in selected) :]
    from_source = steps[0] == RAW
    pushdown = from_source and source.computes_split_and_cyclical()
    key_column = settings.split_key or source.entity_column
    if pushdown and key_column is None:
        raise ValueError(
            "source pushdown needs a split key column: set settings.split_key or source.entity_column "
            "(a split by partition date is computed locally: turn pushdown off)"
        )
    config = preprocess_config(spec, settings)
    datetime_columns = spec.datetime_columns or ()  # TableSpec fills in the timestamp column when not given
    cyclical_names = [f"{column}_{suffix}" for column in datetime_columns for suffix in CYCLICAL_SUFFIXES]
    rows: dict[str, list[dict]] = {name: [] for name in steps}
    totals = {
        RAW: {"rows": 0, "source": type(source).__name__, "pushdown": pushdown, "on_duplicate": settings.on_duplicate},
        SPLIT: {
            "rows": 0,
            "split_key": key_column
            or (f"time block {settings.split_block}" if settings.split_block else "partition date"),
        },
        CYCLICAL: {"rows": 0, "backend": compute.name, "datetime_columns": ", ".join(datetime_columns)},
        "preprocess_stats": {"train_rows": 0},
    }
    # the splits of a bounded sample of the run's distinct split keys (for the split-fractions check)
    split_sample = SplitKeySample()
    bad_cyclical = np.zeros(len(cyclical_names), dtype=np.int64)
    day_checks = []  # (day, its own check result)

    def cyclical_check(bad, n_rows):
        # NaT in a datetime column gives NaN features by design (imputed later): a warning, not an error
        return checks.finite_features_check(
            bad, n_rows, cyclical_names, checks.CYCLICAL_RANGE, AssetCheckSeverity.WARN, asset_key=CYCLICAL
        )

    reader_context = source.open_reader(key_column, tuple(settings.split_fractions)) if from_source else nullcontext()
    with timed(totals[steps[0]]), reader_context as reader:
        for key, start, end in run_partitions(context):
            if reader is not None:  # from_source
                stream = reader.iter_window(start, end, settings.rows_per_chunk)
                # NULL entities, +-inf / overflowing feature values and duplicate (entity, ts) keys are found
                # here, before anything of the partition is kept; duplicates per settings.on_duplicate
                row_checker = RowChecker(
                    key,
                    spec.timestamp_column,
                    spec.entity_column,
                    spec.feature_columns,
                    dtype=settings.dtype,
                    on_duplicate=settings.on_duplicate,
                )
                chunks = row_checker.check(source_chunks(stream, spec.columns))
            else:
                stream, chunks = (
                    None,
                    iter_asset_frames(artifacts, STEPS[STEPS.index(steps[0]) - 1], key, settings.rows_per_chunk),
                )
            n_rows, split_counts = 0, dict.fromkeys(SPLITS, 0)
            stats: PreprocessStats | None = None
            keys: np.ndarray | None = None
            day_sample, day_bad_cyclical = SplitKeySample(), np.zeros(len(cyclical_names), dtype=np.int64)
            with ExitStack() as files:
                # columns pandas cannot type (an empty day's, an all-NULL chunk's) get the source's types
                types = {SPLIT: SPLIT_SCHEMA}
                writers = {
                    name: files.enter_context(artifacts.frame_writer(name, key, types=types.get(name)))
                    for name in (RAW, SPLIT, CYCLICAL)
                    if name in selected
                }
                for chunk in chunks:
                    n_rows += len(chunk)
                    if RAW in writers:
                        writers[RAW].types = stream.arrow_schema  # known once the query ran
                        writers[RAW].write(chunk[spec.columns])
                    if SPLIT in steps:
                        keys = split_keys(chunk, key_column, key, spec.timestamp_column, settings.split_block)
                        if not pushdown:  # else BigQuery computed it with the same hash
                            chunk["split"] = assign_split(keys, tuple(settings.split_fractions))
                        if SPLIT in writers:
                            writers[SPLIT].write(chunk[["split"]])
                            split_sample.add(keys, chunk["split"].to_numpy())
                            day_sample.add(keys, chunk["split"].to_numpy())
                            for split, count in chunk["split"].value_counts().items():
                                split_counts[split] += int(count)
                    if CYCLICAL in steps:
                        if pushdown:  # BigQuery computed them (float64): the settings' dtype, as computed here
                            chunk[cyclical_names] = chunk[cyclical_names].astype(settings.dtype)
                        else:
                            for column in datetime_columns:
                                chunk = add_cyclical_features(chunk, column, compute, dtype=settings.dtype)
                        if CYCLICAL in writers:
                            writers[CYCLICAL].write(chunk[cyclical_names])
                            day_bad_cyclical += checks.count_bad_values(chunk[cyclical_names].to_numpy(), bound=1.0)
                    if "preprocess_stats" in selected:
                        part = compute_partition_stats(chunk, config)
                        stats = part if stats is None else stats.merge(part)
                    chunk = keys = None  # not held while the next chunk is read: one chunk in memory, not two
            if "preprocess_stats" in selected:
                assert stats is not None, "every partition reads at least one chunk (an empty day: one empty frame)"
                artifacts.write_json(stats.to_dict(), "preprocess_stats", key)
                rows["preprocess_stats"].append({"partition": key, "train_rows": int(stats.n_train_rows)})
                totals["preprocess_stats"]["train_rows"] += int(stats.n_train_rows)
            if RAW in selected:
                figures = {k: v for k, v in stream.metadata.items() if k in READ_FIGURES and v is not None}
                rows[RAW].append(
                    {
                        "partition": key,
                        "rows": n_rows,
                        **row_checker.metadata(),
                        **figures,
                        **({"empty_day": EMPTY_DAY} if not n_rows else {}),
                    }
                )
                for name, value in figures.items():
                    totals[RAW][name] = totals[RAW].get(name, 0) + value
                for name, value in row_checker.metadata().items():
                    totals[RAW][name] = totals[RAW].get(name, 0) + value
                merged = row_checker.rows_in - row_checker.rows_out
                if merged:  # a log line is an event-log write: only when there is something to say
                    context.log.info(
                        f"raw_chunk {key}: {merged:,} duplicate rows removed "
                        f"(on_duplicate={settings.on_duplicate}), {n_rows:,} rows kept"
                    )
            if SPLIT in selected:
                rows[SPLIT].append({"partition": key, "rows": n_rows, **split_counts})
                for split, count in split_counts.items():
                    totals[SPLIT][f"{split}_rows"] = totals[SPLIT].get(f"{split}_rows", 0) + count
            if CYCLICAL in selected:
                rows[CYCLICAL].append({"partition": key, "rows": n_rows})
                bad_cyclical += day_bad_cyclical
                day_checks.append((key, cyclical_check(day_bad_cyclical, n_rows)))
            if SPLIT in selected:
                day_checks.append(
                    (key, checks.split_fractions_check(day_sample, settings.split_fractions, asset_key=SPLIT))
                )
            for name in (RAW, SPLIT, CYCLICAL):
                totals[name]["rows"] += n_rows

    for name in STEPS:
        if name not in selected:
            continue
        if name != steps[0]:
            totals[name].update({k: totals[steps[0]][k] for k in ("seconds", "peak_rss_mib")})
        results = []
        if name == SPLIT:
            results.append(checks.split_fractions_check(split_sample, settings.split_fractions, asset_key=SPLIT))
        if name == CYCLICAL:
            results.append(cyclical_check(bad_cyclical, totals[CYCLICAL]["rows"]))
        record_partition_figures(context, name, rows[name], totals[name])
        yield MaterializeResult(asset_key=name, check_results=results)
    record_day_checks(context, day_checks)
