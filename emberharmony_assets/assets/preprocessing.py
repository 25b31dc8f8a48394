"""preprocessor: the seed's prepare_data, fitted on train rows only.

``preprocess_stats`` (per partition, in the ingest pass) holds mergeable statistics of the TRAIN
rows (counts, moments, null counts, category counts, a quantile sketch); ``preprocessor`` (not
partitioned) merges them into one fitted preprocessor (JSON, no pickle); ``features`` (in the
windows pass) applies it to every row.
"""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from emberharmony_core.features.preprocess import PreprocessConfig, fit_preprocessor
from emberharmony_core.features.preprocess.stats import merge_partition_stats
from emberharmony_core.layout import (
    PREPROCESS_STATS,
    PREPROCESSOR,
    RAW,
    load_preprocess_stats,
    preprocess_stats_keys,
    save_preprocessor,
)
from emberharmony_core.sources.base import TableSpec

from ..partitions import daily_partitions
from ..resources import ArtifactStoreResource, PipelineSettings, SourceResource
from ._common import timed


def preprocess_config(spec: TableSpec, settings: PipelineSettings) -> PreprocessConfig:
    """The pipeline settings and source columns as a core ``PreprocessConfig``.

    Numeric features are the source's ``feature_columns`` plus every numeric column
    that reaches this point (cyclical features, booleans, flattened struct fields);
    identifiers (entity, split key) and raw datetimes are excluded.
    """
    return PreprocessConfig(
        # the source's categorical columns are forced; other string columns (struct fields too) are detected
        force_categorical_columns=tuple(
            dict.fromkeys([*spec.categorical_columns, *settings.force_categorical_columns])
        ),
        drop_columns=tuple(settings.drop_columns),
        exclude_columns=tuple(
            dict.fromkeys(
                c
                for c in (spec.entity_column, spec.timestamp_column, settings.split_key, *(spec.datetime_columns or ()))
                if c
            )
        ),
        target_column=settings.target_column,
        null_threshold=settings.null_threshold,
        max_categories=settings.max_categories,
        dtype=settings.dtype,
        struct_fields=settings.struct_fields,
    )


@asset(name=PREPROCESSOR, deps=[PREPROCESS_STATS], group_name="preprocessing", kinds={"json"})
def preprocessor(
    context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings, store: ArtifactStoreResource
) -> MaterializeResult:
    """Imputer, scaler and one-hot vocabulary fitted on every partition's train statistics (JSON, no pickle)."""
    artifacts, config = store.get(), preprocess_config(source.spec(), settings)
    names = [n for n in preprocess_stats_keys(artifacts) if daily_partitions.has_partition_key(n)]
    if not names:
        raise ValueError("no preprocess_stats partitions are materialised: materialise some partitions first")
    metadata: dict[str, int | float | str | MetadataValue] = {"partitions": len(names)}
    with timed(metadata):
        # one partition's statistics in memory at a time, merged in partition order; drift names both partitions
        merged = merge_partition_stats((name, load_preprocess_stats(artifacts, name)) for name in names)
        if not merged.n_train_rows:
            raise ValueError(no_train_rows(artifacts, names, source.spec(), settings))
        fitted = fit_preprocessor(merged, config)
        save_preprocessor(artifacts, fitted)
    summary = fitted.summary()
    dropped = summary[summary["status"] == "dropped"]
    for column, reason in fitted.dropped_.items():
        context.log.warning(f"preprocessor drops column {column!r}: {reason}")
    metadata.update(
        {
            "features_out": len(fitted.feature_names_),
            "train_rows": int(fitted.n_samples_seen_),
            "columns": MetadataValue.md(summary.to_markdown(index=False, floatfmt=".4g")),
            "dropped": MetadataValue.md(dropped[["column", "reason"]].to_markdown(index=False))
            if len(dropped)
            else "none",
            "target": str(fitted.target_),
        }
    )
    return MaterializeResult(metadata=metadata)


def no_train_rows(artifacts, names: list[str], spec: TableSpec, settings: PipelineSettings) -> str:
    """Why there is nothing to fit: no row at all in the partitions, or none in the train split."""
    rows = sum(artifacts.frame_rows(RAW, name) for name in names if artifacts.has_frame(RAW, name))
    where = f"the {len(names)} materialised partition(s) {names[0]} .. {names[-1]}"
    if not rows:
        return (
            f"preprocessor: the source returned no rows in {where}, so there is nothing to fit: check the table "
            f"{spec.table!r}, its timestamp column {spec.timestamp_column!r} and the partition range (the days "
            f"that hold data)"
        )
    return (
        f"preprocessor: none of the {rows:,} rows in {where} falls in the train split (split_fractions "
        f"{list(settings.split_fractions)}, split key "
        f"{settings.split_key or spec.entity_column or 'the partition date'}"
        f"), so there is nothing to fit: materialise more partitions, or use another split key"
    )
