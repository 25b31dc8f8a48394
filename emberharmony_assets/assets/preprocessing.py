"""preprocess_stats -> preprocessor -> features: the seed's prepare_data, fitted on train rows only.

Per partition, mergeable statistics of the TRAIN rows (counts, moments, null
counts, category counts, a quantile sketch); one non-partitioned fitted
preprocessor merged from them (JSON, no pickle); then every partition's rows
imputed, scaled and one-hot encoded with it, ready for windows and PCA.
"""


import numpy as np
from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from emberharmony_core.features.preprocess import (FittedPreprocessor, PreprocessConfig, PreprocessStats,
                                                   compute_partition_stats, fit_preprocessor)
from emberharmony_core.sources.base import TableSpec

from .. import checks
from ..partitions import daily_partitions
from ..resources import ArtifactStoreResource, PipelineSettings, SourceResource
from ._common import partition_windows, per_partition_metadata, timed
from .ingest import cyclical_features

PARTITIONED = dict(partitions_def=daily_partitions, backfill_policy=BackfillPolicy.single_run(), group_name="preprocessing")


def passthrough_columns(spec: TableSpec, settings: PipelineSettings) -> set[str]:
    """Columns carried alongside the features but never fed to windows or PCA."""
    return {c for c in (spec.entity_column, spec.timestamp_column, *spec.datetime_columns, "split",
                        settings.target_column) if c}


def preprocess_config(spec: TableSpec, settings: PipelineSettings) -> PreprocessConfig:
    """The pipeline settings and source columns as a core ``PreprocessConfig``.

    Numeric features are the source's ``feature_columns`` plus every numeric column
    that reaches this point (cyclical features, booleans, flattened struct fields);
    identifiers and raw datetimes are excluded.
    """
    return PreprocessConfig(
        # the source's categorical columns are forced; other string columns (struct fields too) are detected
        force_categorical_columns=tuple(dict.fromkeys([*spec.categorical_columns, *settings.force_categorical_columns])),
        drop_columns=tuple(settings.drop_columns),
        exclude_columns=tuple(dict.fromkeys(c for c in (spec.entity_column, spec.timestamp_column,
                                                        *spec.datetime_columns) if c)),
        target_column=settings.target_column,
        null_threshold=settings.null_threshold,
        max_categories=settings.max_categories,
        dtype=settings.dtype,
    )


@asset(**PARTITIONED, deps=[cyclical_features], kinds={"json"})
def preprocess_stats(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
                     store: ArtifactStoreResource) -> MaterializeResult:
    """Mergeable statistics of this partition's TRAIN rows: moments, nulls, categories, median sketches."""
    artifacts, config = store.get(), preprocess_config(source.spec(), settings)
    rows, totals = [], {"train_rows": 0}
    with timed(totals):
        for key, _, _ in partition_windows(context):
            frame = artifacts.read_frame("cyclical_features", key)
            stats = compute_partition_stats(frame, config)
            artifacts.write_json(stats.to_dict(), "preprocess_stats", key)
            train_rows = int((frame[config.split_column] == config.train_split).sum())
            rows.append({"partition": key, "train_rows": train_rows})
            totals["train_rows"] += train_rows
    return MaterializeResult(metadata=per_partition_metadata(rows, totals))


@asset(deps=[preprocess_stats], group_name="preprocessing", kinds={"json"})
def preprocessor(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
                 store: ArtifactStoreResource) -> MaterializeResult:
    """Imputer, scaler and one-hot vocabulary fitted on every partition's train statistics (JSON, no pickle)."""
    artifacts, config = store.get(), preprocess_config(source.spec(), settings)
    names = [n for n in artifacts.list_names("preprocess_stats", suffix=".json") if daily_partitions.has_partition_key(n)]
    if not names:
        raise ValueError("no preprocess_stats partitions are materialised: materialise some partitions first")
    metadata = {"partitions": len(names)}
    with timed(metadata):
        merged = None  # one partition's statistics in memory at a time, merged in partition order
        for name in names:
            stats = PreprocessStats.from_dict(artifacts.read_json("preprocess_stats", name))
            merged = stats if merged is None else merged.merge(stats)
        fitted = fit_preprocessor(merged, config)
        artifacts.write_json(fitted.to_dict(), "preprocessor", "preprocessor")
    summary = fitted.summary()
    dropped = summary[summary["status"] == "dropped"]
    for column, reason in fitted.dropped_.items():
        context.log.warning(f"preprocessor drops column {column!r}: {reason}")
    metadata.update({
        "features_out": len(fitted.feature_names_),
        "train_rows": int(fitted.n_samples_seen_),
        "columns": MetadataValue.md(summary.to_markdown(index=False, floatfmt=".4g")),
        "dropped": MetadataValue.md(dropped[["column", "reason"]].to_markdown(index=False)) if len(dropped) else "none",
        "target": str(fitted.target_),
    })
    return MaterializeResult(metadata=metadata)


def load_preprocessor(artifacts) -> FittedPreprocessor:
    return FittedPreprocessor.from_dict(artifacts.read_json("preprocessor", "preprocessor"))


@asset(**PARTITIONED, deps=[cyclical_features, preprocessor], kinds={"parquet"}, check_specs=[checks.spec(
    "features", checks.FINITE_FEATURES, "no NaN or inf in any feature column after imputation and scaling")])
def features(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
             store: ArtifactStoreResource) -> MaterializeResult:
    """Every row imputed, scaled and one-hot encoded with the fitted preprocessor (all splits)."""
    artifacts = store.get()
    fitted = load_preprocessor(artifacts)
    names = list(fitted.feature_names_)
    rows, totals = [], {"rows": 0, "features": len(names)}
    bad = np.zeros(len(names), dtype=np.int64)
    with timed(totals):
        for key, _, _ in partition_windows(context):
            frame = fitted.transform_frame(artifacts.read_frame("cyclical_features", key))
            artifacts.write_frame(frame, "features", key)
            bad += checks.count_bad_values(frame[names].to_numpy())
            rows.append({"partition": key, "rows": len(frame)})
            totals["rows"] += len(frame)
    check = checks.finite_features_check(bad, totals["rows"], names)
    return MaterializeResult(metadata=per_partition_metadata(rows, totals), check_results=[check])
