"""raw_chunk -> split_data -> cyclical_features: one time partition at a time."""

import numpy as np
from dagster import AssetCheckSeverity, AssetExecutionContext, BackfillPolicy, MaterializeResult, asset

from emberharmony_core.features.cyclical import CYCLICAL_SUFFIXES
from emberharmony_core.features.cyclical import cyclical_features as add_cyclical_features
from emberharmony_core.features.split import assign_split

from .. import checks
from ..partitions import daily_partitions
from ..resources import ArtifactStoreResource, BackendResource, PipelineSettings, SourceResource
from ._common import partition_windows, per_partition_metadata, timed

PARTITIONED = dict(partitions_def=daily_partitions, backfill_policy=BackfillPolicy.single_run(), group_name="features")
SPLITS = ("train", "validation", "test")
READ_FIGURES = ("bytes_read", "bytes_processed", "bytes_billed", "pages", "seconds")


@asset(**PARTITIONED, kinds={"duckdb", "bigquery", "parquet"})
def raw_chunk(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
              store: ArtifactStoreResource) -> MaterializeResult:
    """Rows whose timestamp lies in the partition's window, read with one parameterised query.

    With BigQuery pushdown the same query also returns ``split`` and the cyclical columns.
    """
    artifacts = store.get()
    rows, totals = [], {"rows": 0, "source": type(source).__name__,
                        "pushdown": source.computes_split_and_cyclical()}
    split_key = settings.split_key or source.entity_column
    if source.computes_split_and_cyclical() and split_key is None:
        raise ValueError("source pushdown needs a split key column: set settings.split_key or source.entity_column "
                         "(a split by partition date is computed locally: turn pushdown off)")
    with timed(totals), source.open_reader(split_key, tuple(settings.split_fractions)) as reader:
        for key, start, end in partition_windows(context):
            read = reader.read_window(start, end)
            artifacts.write_frame(read.frame, "raw_chunk", key)
            context.log.info(f"raw_chunk {key}: {len(read.frame):,} rows from {read.metadata.get('source')}")
            figures = {k: v for k, v in read.metadata.items() if k in READ_FIGURES and v is not None}
            rows.append({"partition": key, "rows": len(read.frame), **figures})
            totals["rows"] += len(read.frame)
            for name, value in figures.items():
                if name != "seconds":
                    totals[name] = totals.get(name, 0) + value
    return MaterializeResult(metadata=per_partition_metadata(rows, totals))


def split_keys(frame, key_column: str | None, partition_key: str) -> np.ndarray:
    """The values hashed for the split: the key column, or the partition date (one split per day)."""
    if key_column is None:
        return np.full(len(frame), partition_key, dtype=object)
    return frame[key_column].to_numpy()


@asset(**PARTITIONED, deps=[raw_chunk], kinds={"parquet"}, check_specs=[checks.spec(
    "split_data", checks.SPLIT_FRACTIONS, "share of distinct split keys per split is near the configured fraction")])
def split_data(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
               store: ArtifactStoreResource) -> MaterializeResult:
    """Rows with their ``split`` (train/validation/test) from FARM_FINGERPRINT of the split key."""
    artifacts = store.get()
    key_column = settings.split_key or source.entity_column
    rows, totals = [], {"rows": 0, "split_key": key_column or "partition date"}
    seen_keys, seen_splits = [], []
    with timed(totals):
        for key, _, _ in partition_windows(context):
            frame = artifacts.read_frame("raw_chunk", key)
            if key_column is not None and key_column not in frame.columns:
                raise ValueError(f"split_key {key_column!r} is not a column read from the source; "
                                 f"columns: {', '.join(frame.columns)}")
            keys = split_keys(frame, key_column, key)
            if not source.computes_split_and_cyclical():  # else BigQuery computed it with the same hash
                frame["split"] = assign_split(keys, tuple(settings.split_fractions))
            artifacts.write_frame(frame, "split_data", key)
            distinct, first = np.unique(keys.astype(str), return_index=True)
            seen_keys.append(distinct)
            seen_splits.append(frame["split"].to_numpy()[first])
            counts = frame["split"].value_counts()
            rows.append({"partition": key, "rows": len(frame), **{s: int(counts.get(s, 0)) for s in SPLITS}})
            totals["rows"] += len(frame)
    for split in SPLITS:
        totals[f"{split}_rows"] = sum(r[split] for r in rows)
    check = checks.split_fractions_check(np.concatenate(seen_keys), np.concatenate(seen_splits), settings.split_fractions)
    return MaterializeResult(metadata=per_partition_metadata(rows, totals), check_results=[check])


@asset(**PARTITIONED, deps=[split_data], kinds={"parquet"}, check_specs=[checks.spec(
    "cyclical_features", checks.CYCLICAL_RANGE, "every sin/cos value is finite and within [-1, 1]")])
def cyclical_features(context: AssetExecutionContext, source: SourceResource, backend: BackendResource,
                      store: ArtifactStoreResource) -> MaterializeResult:
    """Split rows plus 8 sin/cos columns per datetime column (true periods: 24 h, 7 d, month length, 12 months)."""
    artifacts, compute = store.get(), backend.get()
    columns = list(source.spec().datetime_columns)
    names = [f"{column}_{suffix}" for column in columns for suffix in CYCLICAL_SUFFIXES]
    rows, totals = [], {"rows": 0, "backend": compute.name, "datetime_columns": ", ".join(columns)}
    bad = np.zeros(len(names), dtype=np.int64)
    with timed(totals):
        for key, _, _ in partition_windows(context):
            frame = artifacts.read_frame("split_data", key)
            if source.computes_split_and_cyclical():  # BigQuery computed them (float64): same dtype as local
                frame[names] = frame[names].astype("float32")
            else:
                for column in columns:
                    frame = add_cyclical_features(frame, column, compute)
            artifacts.write_frame(frame, "cyclical_features", key)
            bad += checks.count_bad_values(frame[names].to_numpy(), bound=1.0)
            rows.append({"partition": key, "rows": len(frame)})
            totals["rows"] += len(frame)
    # NaT in a datetime column gives NaN features by design (imputed later): a warning, not an error
    check = checks.finite_features_check(bad, totals["rows"], names, checks.CYCLICAL_RANGE, AssetCheckSeverity.WARN)
    return MaterializeResult(metadata=per_partition_metadata(rows, totals), check_results=[check])
