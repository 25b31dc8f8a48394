"""stride_windows -> pca_stats -> pca_models -> projected_windows.

Windows need the previous partition's last ``window_size - 1`` rows per entity:
the dependency on ``features`` maps each partition to itself and its predecessor
(``TimeWindowPartitionMapping(start_offset=-1)``), which the UI draws.
PCA is fitted from per-partition statistics merged in ``pca_models`` (backfilling
one partition rewrites its statistics; the merge re-reads only the small d x d
files), then applied to every partition's windows in ``projected_windows``.
"""


import numpy as np
from dagster import AssetDep, AssetExecutionContext, BackfillPolicy, MaterializeResult, asset

from emberharmony_core.features.pca import PCAModel, PCAStats
from emberharmony_core.partition_windows import partition_windows as build_partition_windows
from emberharmony_core.partition_windows import expected_window_counts, tail

from .. import checks
from ..partitions import daily_partitions, with_previous_partition
from ..resources import ArtifactStoreResource, BackendResource, PipelineSettings, SourceResource
from ._common import markdown_table, partition_windows, per_partition_metadata, previous_partition_key, timed
from .preprocessing import features, passthrough_columns

PARTITIONED = dict(partitions_def=daily_partitions, backfill_policy=BackfillPolicy.single_run(), group_name="windows")


def stride_folder(stride: int) -> str:
    return f"stride={stride}"


def _storable(values: np.ndarray) -> np.ndarray:
    """Object arrays (entity ids) become fixed-width strings so no pickle is ever needed."""
    return values.astype(str) if values.dtype == object else values


@asset(**PARTITIONED, deps=[AssetDep(features, partition_mapping=with_previous_partition)], kinds={"numpy"},
       check_specs=[checks.spec("stride_windows", checks.WINDOW_COUNTS,
                                "windows per stride equal what the partition's rows per entity (and the tail) imply")])
def stride_windows(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
                   backend: BackendResource, store: ArtifactStoreResource) -> MaterializeResult:
    """Per stride, the windows whose last row lies in this partition: (m, window_size * F) float arrays."""
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    w = settings.window_size
    rows, totals = [], {"backend": compute.name, "window_size": w, "strides": str(settings.strides)}
    expected, produced = dict.fromkeys(settings.strides, 0), dict.fromkeys(settings.strides, 0)
    with timed(totals):
        for key, _, _ in partition_windows(context):
            current = artifacts.read_frame("features", key)
            previous_key = previous_partition_key(key)
            previous_tail = None
            if previous_key is not None and w > 1:
                if not artifacts.exists("features", previous_key, suffix=".parquet"):
                    raise FileNotFoundError(
                        f"stride_windows {key} needs the last {w - 1} rows of features partition {previous_key}: "
                        f"materialise features for {previous_key} first (or backfill the range from there)")
                previous_tail = tail(artifacts.read_frame("features", previous_key), spec.entity_column, w - 1)
            feature_columns = [c for c in current.columns if c not in passthrough_columns(spec, settings)]
            by_stride = build_partition_windows(
                current, previous_tail, feature_columns=feature_columns, timestamp_column=spec.timestamp_column,
                entity_column=spec.entity_column, window_size=w, strides=settings.strides, backend=compute,
                dtype=settings.dtype)
            row = {"partition": key, "rows": len(current)}
            implied = expected_window_counts(current, previous_tail, spec.entity_column, w, settings.strides)
            for stride, result in by_stride.items():
                expected[stride] += implied[stride]
                produced[stride] += result.candidates
                artifacts.write_arrays({"windows": compute.to_numpy(result.windows), "entity": _storable(result.entity),
                                        "end_time": result.end_time, "split": result.split.astype(str),
                                        "candidates": np.int64(result.candidates),
                                        "feature_columns": np.array(feature_columns, dtype=str)},
                                       "stride_windows", stride_folder(stride), key)
                row[f"windows_stride_{stride}"] = int(result.windows.shape[0])
                if result.mixed_split_dropped:
                    row[f"mixed_split_dropped_stride_{stride}"] = result.mixed_split_dropped
            rows.append(row)
    for stride in settings.strides:
        totals[f"windows_stride_{stride}"] = sum(r[f"windows_stride_{stride}"] for r in rows)
    totals["window_width"] = w * len(feature_columns) if rows else 0
    return MaterializeResult(metadata=per_partition_metadata(rows, totals),
                             check_results=[checks.window_counts_check(expected, produced)])


@asset(**PARTITIONED, deps=[stride_windows], kinds={"numpy"})
def pca_stats(context: AssetExecutionContext, settings: PipelineSettings, backend: BackendResource,
              store: ArtifactStoreResource) -> MaterializeResult:
    """Per stride, mergeable PCA statistics (count, mean, scatter; float64) of this partition's TRAIN windows."""
    artifacts, compute = store.get(), backend.get()
    rows, totals = [], {"backend": compute.name}
    with timed(totals):
        for key, _, _ in partition_windows(context):
            row = {"partition": key}
            for stride in settings.strides:
                stored = artifacts.read_arrays("stride_windows", stride_folder(stride), key)
                train = stored["windows"][stored["split"] == "train"]
                stats = PCAStats(n_features=train.shape[1]).update(compute.asarray(train))
                artifacts.write_arrays(stats.to_arrays(), "pca_stats", stride_folder(stride), key)
                row[f"train_windows_stride_{stride}"] = int(len(train))
            rows.append(row)
    return MaterializeResult(metadata=per_partition_metadata(rows, totals))


def merged_stats(artifacts, stride: int) -> tuple[PCAStats, int]:
    """All stored partitions' statistics for one stride, merged; and how many partitions had train windows."""
    merged, used = PCAStats(), 0
    for name in artifacts.list_names("pca_stats", stride_folder(stride), suffix=".npz"):
        if not daily_partitions.has_partition_key(name):
            continue  # a file from partitions outside the current definition
        stats = PCAStats.from_arrays(artifacts.read_arrays("pca_stats", stride_folder(stride), name))
        if merged.n_features is not None and stats.n_features not in (None, merged.n_features):
            raise ValueError(f"pca_stats {name} (stride {stride}) has {stats.n_features} features, earlier partitions "
                             f"{merged.n_features}: window_size or the feature columns changed since; re-materialise "
                             "features, stride_windows and pca_stats for every partition")
        merged = merged.merge(stats)
        used += stats.n_samples > 0
    return merged, used


@asset(deps=[pca_stats], group_name="windows", kinds={"numpy"}, check_specs=[checks.spec(
    "pca_models", checks.EXPLAINED_VARIANCE, "ratios finite, in [0, 1], decreasing, summing to at most 1")])
def pca_models(context: AssetExecutionContext, settings: PipelineSettings, store: ArtifactStoreResource) -> MaterializeResult:
    """Per stride, PCA fitted on ALL train windows, merged from per-partition statistics (exact, order-free)."""
    artifacts = store.get()
    metadata, summary, ratios = {}, [], {}
    with timed(metadata):
        for stride in settings.strides:
            stats, used = merged_stats(artifacts, stride)
            if stats.n_samples < 2:
                raise ValueError(f"stride {stride}: {stats.n_samples} train windows; materialise pca_stats for "
                                 "partitions whose rows include the train split")
            k = min(settings.n_components, stats.n_samples, stats.n_features)
            if k < settings.n_components:
                context.log.warning(f"stride {stride}: n_components {settings.n_components} is more than "
                                    f"{stats.n_samples} windows x {stats.n_features} features allow; using {k}")
            model = stats.fit(k)
            artifacts.write_arrays(model.to_arrays(), "pca_models", stride_folder(stride))
            ratio = ratios[stride] = model.explained_variance_ratio_
            summary.append({"stride": stride, "train_windows": int(model.n_samples_), "partitions": used,
                            "features": int(model.n_features_in_), "components": int(model.n_components_),
                            "explained_variance": round(float(ratio.sum()), 4)})
            metadata[f"explained_variance_ratio_stride_{stride}"] = markdown_table(
                [{"component": i + 1, "ratio": round(float(r), 5), "cumulative": round(float(c), 5)}
                 for i, (r, c) in enumerate(zip(ratio, np.cumsum(ratio)))])
    metadata["models"] = markdown_table(summary)
    return MaterializeResult(metadata=metadata, check_results=[checks.explained_variance_check(ratios)])


def load_model(artifacts, stride: int) -> PCAModel:
    return PCAModel.from_arrays(artifacts.read_arrays("pca_models", stride_folder(stride)))


@asset(**PARTITIONED, deps=[stride_windows, pca_models], kinds={"numpy"})
def projected_windows(context: AssetExecutionContext, settings: PipelineSettings, backend: BackendResource,
                      store: ArtifactStoreResource) -> MaterializeResult:
    """Every window of the partition projected onto its stride's fitted components: (m, n_components)."""
    artifacts, compute = store.get(), backend.get()
    models = {stride: load_model(artifacts, stride) for stride in settings.strides}
    rows, totals = [], {"backend": compute.name}
    with timed(totals):
        for key, _, _ in partition_windows(context):
            row = {"partition": key}
            for stride, model in models.items():
                stored = artifacts.read_arrays("stride_windows", stride_folder(stride), key)
                projected = compute.to_numpy(model.transform(compute.asarray(stored["windows"])))
                artifacts.write_arrays({"projected": projected, "entity": stored["entity"], "end_time": stored["end_time"],
                                        "split": stored["split"]}, "projected_windows", stride_folder(stride), key)
                row[f"windows_stride_{stride}"] = int(projected.shape[0])
            rows.append(row)
    return MaterializeResult(metadata=per_partition_metadata(rows, totals))
