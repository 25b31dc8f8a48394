"""Write-back to BigQuery: ``bigquery_features`` and ``bigquery_projected_windows``.

Each copies one stored partition (``features``; ``projected_windows``, every stride) into a BigQuery table
partitioned by day, replacing that day (``emberharmony_core.sources.bigquery_export``): re-materialising a
partition replaces its day again, the other days stay. The stored Parquet is read chunk by chunk
(``settings.rows_per_chunk`` rows), so memory stays one chunk whatever the size of a day.

The tables (``<dataset>.<prefix>features``, ``<dataset>.<prefix>projected_windows``), their columns,
partitioning and clustering: docs/bigquery.md (Write-back).

They join the default graph only when the environment configures the write-back
(``EMBERHARMONY_SOURCE=bigquery`` and ``EMBERHARMONY_BQ_EXPORT_DATASET``; ``export_enabled_from_env``), so
the DuckDB default graph, its jobs and its benchmark are unchanged. Bound explicitly (``export_assets``)
to a source without ``export_dataset``, they log why and materialise nothing.
"""

import os
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetExecutionContext, MaterializeResult, asset

from emberharmony_core.layout import EXPORT_FEATURES, EXPORT_PROJECTED, FEATURES, PROJECTED, stride_folder
from emberharmony_core.sources.bigquery_export import ExportPart, ExportTarget, export_partition
from emberharmony_core.store import ArtifactStore

from ..resources import ArtifactStoreResource, PipelineSettings, SourceResource
from ._common import PARTITIONED, record_partition_figures, run_partitions, timed

if TYPE_CHECKING:  # not imported at run time: it needs dagster_gcp, and the DuckDB default graph imports this module
    from ..bigquery import BigQuerySourceResource


def export_enabled_from_env() -> bool:
    """True when the environment selects the BigQuery source with a write-back dataset (the default graph then
    includes the write-back assets)."""
    return os.environ.get("EMBERHARMONY_SOURCE", "duckdb").strip().lower() == "bigquery" and bool(
        os.environ.get("EMBERHARMONY_BQ_EXPORT_DATASET")
    )


def stored_schema(artifacts: ArtifactStore, asset_name: str, key: str, *sub: str) -> pa.Schema:
    """The Arrow schema of a stored partition, from its Parquet footer (a missing or unreadable file raises the
    store's error, naming the repair)."""
    artifacts.frame_rows(asset_name, key, *sub)
    path = artifacts.frame_path(asset_name, key, *sub)
    if artifacts.local:
        return pq.read_schema(path.path)
    with path.open("rb") as handle:
        return pq.read_schema(handle)


def _destination(context: AssetExecutionContext, source: SourceResource, name: str) -> "str | None":
    export_table = getattr(source, "export_table", None)
    table = export_table(name) if callable(export_table) else None
    if table is None:
        context.log.warning(
            f"BigQuery write-back is off: source {type(source).__name__} has no export_dataset, so nothing is "
            f"written and {context.assets_def.key.to_user_string()} is not materialised. Set "
            "resources.source.config.export_dataset (EMBERHARMONY_BQ_EXPORT_DATASET) on the BigQuery source"
        )
    return table


def _export(
    context: AssetExecutionContext,
    source: SourceResource,
    store: ArtifactStoreResource,
    name: str,
    stored: str,
    target_of,
    parts_of,
):
    """Replace each of the run's days of table ``<prefix><stored>`` with the stored partition of ``stored``."""
    table = _destination(context, source, stored)
    if table is None:
        return
    bigquery = cast("BigQuerySourceResource", source)  # it has an export table: the BigQuery source
    artifacts, spec = store.get(), source.spec()
    target = target_of(table, spec)
    rows: list[dict] = []
    totals: dict[str, Any] = {"table": table}
    added_columns: list[str] = []
    with timed(totals), bigquery.client() as client:
        for key, start, _ in run_partitions(context):
            result = export_partition(
                client,
                target,
                start.date(),
                parts_of(artifacts, key),
                method=bigquery.export_method,
                location=bigquery.location,
            )
            context.log.info(f"{table}: day {key} replaced ({result.rows} rows, {result.method})")
            rows.append(
                {
                    "partition": key,
                    "rows": result.rows,
                    "parquet_bytes": result.parquet_bytes,
                    "jobs": ", ".join(result.job_ids),
                }
            )
            totals.update({k: v for k, v in result.metadata().items() if k in ("method", "renamed_columns")})
            if result.added_columns:
                added_columns.extend(result.added_columns)
                totals["added_columns"] = ", ".join(added_columns)
    totals["rows_total"] = sum(r["rows"] for r in rows)
    record_partition_figures(context, name, rows, totals)
    yield MaterializeResult()


@asset(
    name=EXPORT_FEATURES, deps=[FEATURES], output_required=False, group_name="export", kinds={"bigquery"}, **PARTITIONED
)
def bigquery_features(
    context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings, store: ArtifactStoreResource
):
    """The partition's ``features`` rows in ``<export_dataset>.<prefix>features`` (partitioned by day on the
    timestamp column), the day replaced whole: a load job with WRITE_TRUNCATE on ``table$YYYYMMDD``."""

    def target_of(table, spec):
        entity = [spec.entity_column] if spec.entity_column else []
        return ExportTarget(
            table,
            spec.timestamp_column,
            clustering_fields=("split", *entity),
            description="emberharmony features (imputed, scaled, one-hot encoded), one partition a day",
        )

    def parts_of(artifacts, key):
        return [
            ExportPart(
                stored_schema(artifacts, FEATURES, key),
                artifacts.iter_batches(FEATURES, key, rows=settings.rows_per_chunk),
            )
        ]

    yield from _export(context, source, store, EXPORT_FEATURES, FEATURES, target_of, parts_of)


@asset(
    name=EXPORT_PROJECTED,
    deps=[PROJECTED],
    output_required=False,
    group_name="export",
    kinds={"bigquery"},
    **PARTITIONED,
)
def bigquery_projected_windows(
    context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings, store: ArtifactStoreResource
):
    """Every stride's projected windows of the partition in ``<export_dataset>.<prefix>projected_windows``
    (``stride`` column added; partitioned by day on ``end_time``), the day replaced whole for all strides at once."""

    def target_of(table, spec):
        entity = spec.entity_column or "entity"
        return ExportTarget(
            table,
            "end_time",
            clustering_fields=("stride", "split", entity),
            description="emberharmony projected windows: one row per window, pc_1 .. pc_k per stride",
        )

    def parts_of(artifacts, key):
        return [
            ExportPart(
                stored_schema(artifacts, PROJECTED, key, stride_folder(s)),
                artifacts.iter_batches(PROJECTED, key, stride_folder(s), rows=settings.rows_per_chunk),
                constants={"stride": int(s)},
            )
            for s in settings.strides
        ]

    yield from _export(context, source, store, EXPORT_PROJECTED, PROJECTED, target_of, parts_of)


export_assets = [bigquery_features, bigquery_projected_windows]

__all__ = [
    "EXPORT_FEATURES",
    "EXPORT_PROJECTED",
    "bigquery_features",
    "bigquery_projected_windows",
    "export_assets",
    "export_enabled_from_env",
    "stored_schema",
]
