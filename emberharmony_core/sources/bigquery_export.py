"""Write-back to BigQuery: one day of a day-partitioned table replaced per call, idempotently (no dagster import).

``export_partition(client, target, day, parts)`` streams Arrow record batches (the stored Parquet of one
partition, read chunk by chunk) into ONE local Parquet file, then replaces the day in BigQuery:

* ``partition_decorator`` (the default on BigQuery): one load job on ``table$YYYYMMDD`` with
  ``WRITE_TRUNCATE``; BigQuery swaps the day's partition atomically (readers see the old day or the new
  one, never a mix), other days are untouched.
* ``transaction`` (for servers without partition decorators, e.g. the emulator; also valid on BigQuery):
  the file is loaded into a staging table, then one multi-statement transaction
  ``DELETE`` the day + ``INSERT ... SELECT`` from staging, ``COMMIT`` (rolled back whole on any error);
  the staging table is dropped afterwards (and expires after a day if the process dies).
* ``auto``: ``transaction`` when the client points at an emulator (``BIGQUERY_EMULATOR_HOST`` or a
  non-googleapis endpoint), ``partition_decorator`` otherwise.

What each method costs on BigQuery, and which to prefer: docs/bigquery.md (Write-back).

Running it again for the same day replaces the day again: same rows, same values, the other days untouched.
A day with no rows deletes the day (one DML statement on whole partitions).

The table is created on first use (``TimePartitioning(DAY, field)``, clustering fields, every column
NULLABLE) or checked: partitioned by day on the same field, no column of another type. Columns the data
has and the table lacks are added (NULLABLE; a table patch); columns the table has and the data lacks
are loaded as NULL (a refit preprocessor with a new category, or fewer components, keeps old days).
Column names that BigQuery would refuse are renamed (invalid characters to ``_``, see
``bigquery_column_names``) and the mapping returned. Types: strings (and dictionaries of them) STRING,
integers INT64, floats FLOAT64, booleans BOOL, timestamps with a zone TIMESTAMP (truncated to
microseconds, BigQuery's precision), without one DATETIME, dates DATE.

Memory: one record batch at a time while the file is written; the upload is resumable in 100 MiB chunks
(google-cloud-bigquery's), so neither holds a whole day. Disk: the day's Parquet file, in ``staging_dir``
(default: the system temporary folder), removed afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .bigquery import ARROW_TYPES, is_emulator
from .sql import check_column, parse_bigquery_table

logger = logging.getLogger(__name__)

EXPORT_METHODS = ("auto", "partition_decorator", "transaction")
STAGING_EXPIRY = timedelta(days=1)
_INVALID = re.compile(r"[^A-Za-z0-9_]")
_RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colidentifier")
_SAME_TYPE = {"FLOAT": "FLOAT64", "INTEGER": "INT64", "BOOLEAN": "BOOL"}


class ExportError(RuntimeError):
    """The write-back cannot go ahead (an existing table that does not fit, rows outside the day, ...)."""


@dataclass(frozen=True)
class ExportTarget:
    """A day-partitioned BigQuery table: ``table`` is ``project.dataset.table``; ``partition_field`` a TIMESTAMP,
    DATETIME or DATE column of the data (its source name); ``clustering_fields`` up to four source names."""

    table: str
    partition_field: str
    clustering_fields: tuple[str, ...] = ()
    description: str | None = None

    def __post_init__(self):
        parse_bigquery_table(self.table)  # raises naming the bad part
        if len(self.clustering_fields) > 4:
            raise ValueError(
                f"{self.table}: BigQuery clusters on at most 4 columns, got {list(self.clustering_fields)}"
            )


@dataclass
class ExportPart:
    """Record batches sharing ``schema`` (a subset of the export's columns), plus ``constants``: columns of one
    value for every row of the part (e.g. ``{"stride": 3}``)."""

    schema: pa.Schema
    batches: Iterable[pa.RecordBatch]
    constants: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    table: str
    day: date
    method: str
    rows: int
    rows_in_bigquery: int
    parquet_bytes: int
    seconds: float
    job_ids: list[str]
    renamed: dict[str, str]
    added_columns: list[str]

    def metadata(self) -> dict:
        out = {
            "table": self.table,
            "method": self.method,
            "rows": self.rows,
            "rows_in_bigquery": self.rows_in_bigquery,
            "parquet_bytes": self.parquet_bytes,
            "seconds": round(self.seconds, 3),
            "jobs": ", ".join(self.job_ids),
        }
        if self.renamed:
            out["renamed_columns"] = ", ".join(f"{a} -> {b}" for a, b in self.renamed.items())
        if self.added_columns:
            out["added_columns"] = ", ".join(self.added_columns)
        return out


# ------------------------------------------------------------------ names and types
def bigquery_column_names(names: Sequence[str]) -> dict[str, str]:
    """Source name -> a name BigQuery accepts: characters other than letters, digits and ``_`` become ``_``, a
    leading digit (or a reserved prefix such as ``_PARTITION``) gets ``c_`` in front, at most 300 characters,
    and names equal but for case get ``_2``, ``_3`` ... (BigQuery names are case-insensitive). Valid names stay."""
    out, taken = {}, set()
    for name in names:
        new = _INVALID.sub("_", str(name)) or "c"
        if new[0].isdigit() or new.lower().startswith(_RESERVED_PREFIXES):
            new = f"c_{new}"
        new, base, n = new[:300], new[:290], 1
        while new.lower() in taken:
            n += 1
            new = f"{base}_{n}"
        taken.add(new.lower())
        out[name] = new
    return out


def _bigquery_arrow_type(name: str, kind: pa.DataType) -> tuple[pa.DataType, str]:
    """(the Arrow type written to Parquet, the BigQuery type it loads as) for a column of ``kind``."""
    if pa.types.is_dictionary(kind):
        return _bigquery_arrow_type(name, kind.value_type)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa.string(), "STRING"
    if pa.types.is_boolean(kind):
        return pa.bool_(), "BOOL"
    if pa.types.is_integer(kind):
        return pa.int64(), "INT64"
    if pa.types.is_float16(kind):
        return pa.float32(), "FLOAT64"
    if pa.types.is_floating(kind):
        return kind, "FLOAT64"  # float32 stays float32 on disk (half the bytes); BigQuery loads it as FLOAT64
    if pa.types.is_timestamp(kind):
        return (pa.timestamp("us", tz="UTC"), "TIMESTAMP") if kind.tz else (pa.timestamp("us"), "DATETIME")
    if pa.types.is_date(kind):
        return pa.date32(), "DATE"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pa.binary(), "BYTES"
    raise ExportError(
        f"column {name!r} has type {kind}, which the BigQuery write-back does not map (strings, "
        "integers, floats, booleans, timestamps, dates and bytes are written)"
    )


def unify_schemas(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """Every column of every schema, in first-seen order; a column whose BigQuery type differs between schemas
    raises (float32 and float64 agree: both are FLOAT64; the first Arrow type is kept)."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for f in schema:
            if f.name in fields:
                old = _bigquery_arrow_type(f.name, fields[f.name].type)[1]
                new = _bigquery_arrow_type(f.name, f.type)[1]
                if old != new:
                    raise ExportError(f"column {f.name!r} is {old} in one part and {new} in another")
            else:
                fields[f.name] = pa.field(f.name, f.type)
    return pa.schema(list(fields.values()))


def _normal(kind: str) -> str:
    return _SAME_TYPE.get(kind.upper(), kind.upper())


# ------------------------------------------------------------------ the table
def _plan_table(
    client, target: ExportTarget, columns: list[tuple[str, str]], partition: str, clustering: list[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Create the table, or check it and add the columns it lacks. Returns the table's columns (name, BigQuery
    type) in its order (the loaded file follows it) and the names added."""
    from google.api_core.exceptions import Conflict, NotFound
    from google.cloud import bigquery

    schema = [bigquery.SchemaField(name, kind, mode="NULLABLE") for name, kind in columns]
    try:
        table = client.get_table(target.table)
    except NotFound:
        table = bigquery.Table(target.table, schema=schema)
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=partition)
        table.clustering_fields = clustering or None
        table.description = target.description
        try:
            client.create_table(table)
            logger.info("created %s, partitioned by day on %s", target.table, partition)
            return list(columns), []
        except Conflict:  # another run created it meanwhile: check it like any existing table
            table = client.get_table(target.table)
    partitioning = table.time_partitioning
    if partitioning is None or (partitioning.field or "_PARTITIONTIME") != partition or partitioning.type_ != "DAY":
        shown = (
            "not time-partitioned"
            if partitioning is None
            else f"partitioned by {partitioning.type_} on {partitioning.field or '_PARTITIONTIME (ingestion time)'}"
        )
        raise ExportError(
            f"{target.table} exists and is {shown}; the write-back replaces one day at a time and needs "
            f"it partitioned by DAY on {partition}: drop the table (it is re-created) or export under "
            "another export_table_prefix"
        )
    existing = {f.name.lower(): f for f in table.schema}
    wrong = [
        f"{name} ({existing[name.lower()].field_type} in the table, {kind} in the data)"
        for name, kind in columns
        if name.lower() in existing and _normal(existing[name.lower()].field_type) != _normal(kind)
    ]
    if wrong:
        raise ExportError(
            f"{target.table}: columns whose type changed: {', '.join(wrong)}; drop the table (it is "
            "re-created) or export under another export_table_prefix"
        )
    added = [
        bigquery.SchemaField(name, kind, mode="NULLABLE") for name, kind in columns if name.lower() not in existing
    ]
    if added:  # adding NULLABLE columns is a metadata change; old rows read NULL there
        table.schema = list(table.schema) + added
        table = client.update_table(table, ["schema"])
        logger.info("%s: added columns %s", target.table, [f.name for f in added])
    return [(f.name, _normal(f.field_type)) for f in table.schema], [f.name for f in added]


# ------------------------------------------------------------------ the day's file
def _literal(kind: str, moment: datetime) -> str:
    if kind == "DATE":
        return f"DATE '{moment:%Y-%m-%d}'"
    if kind == "DATETIME":
        return f"DATETIME '{moment:%Y-%m-%d %H:%M:%S}'"
    return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}+00'"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _check_day(batch: pa.RecordBatch, column: str, source_name: str, day: date) -> None:
    """Every row's partition value falls in ``day`` (UTC): BigQuery would refuse others on a decorator load, and
    the transaction would leave them outside the day it replaces."""
    values = batch.column(column)
    if values.null_count:
        raise ExportError(
            f"{values.null_count} row(s) of {day} have no {source_name}: the partition column must be set"
        )
    if not len(values):
        return
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    day_start, day_end = _day_bounds(day)
    start: date
    end: date
    if isinstance(low, datetime):
        if low.tzinfo is None:
            start, end = day_start.replace(tzinfo=None), day_end.replace(tzinfo=None)
        else:
            start, end = day_start, day_end
    else:
        start, end = day_start.date(), day_end.date()
    if low < start or high >= end:
        raise ExportError(
            f"rows of partition {day} have {source_name} from {low} to {high}, outside the day "
            f"[{start}, {end}): BigQuery's day partitions are UTC days"
        )


def _conform(batch: pa.RecordBatch, constants: Mapping[str, Any], plan: list[tuple[str, pa.DataType, str | None]]):
    """``batch`` as the file's schema: columns in the table's order, renamed, cast, constants filled, the rest NULL."""
    arrays = []
    names = set(batch.schema.names)
    for _target_name, kind, source_name in plan:
        if source_name is not None and source_name in constants:
            arrays.append(pa.array([constants[source_name]] * batch.num_rows, type=kind))
        elif source_name is not None and source_name in names:
            column = batch.column(source_name)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if not column.type.equals(kind):
                column = pc.cast(column, options=pc.CastOptions(kind, allow_time_truncate=True))
            arrays.append(column)
        else:
            arrays.append(pa.nulls(batch.num_rows, type=kind))
    return pa.RecordBatch.from_arrays(arrays, names=[name for name, _, _ in plan])


# ------------------------------------------------------------------ the export
def resolve_method(client, method: str) -> str:
    if method not in EXPORT_METHODS:
        raise ValueError(f"export method must be one of {', '.join(EXPORT_METHODS)}, got {method!r}")
    if method == "auto":
        return "transaction" if is_emulator(client) else "partition_decorator"
    return method


def _quoted(table: str) -> str:
    project, dataset, name = parse_bigquery_table(table)
    return f"`{project}.{dataset}.{name}`"


# Complexity: plan, write the file, load, count, clean up: one linear pass with its finally blocks.
def export_partition(  # noqa: C901
    client,
    target: ExportTarget,
    day: date,
    parts: Sequence[ExportPart],
    *,
    method: str = "auto",
    location: str | None = None,
    staging_dir: str | None = None,
) -> ExportResult:
    """Replace ``day`` of ``target`` with the rows of ``parts`` (see the module docstring); returns what was done.

    ``day`` is a UTC calendar day; every row's ``target.partition_field`` must fall in it.
    """
    from google.cloud import bigquery

    started = time.perf_counter()
    method = resolve_method(client, method)
    schema = unify_schemas(
        [pa.schema([(k, pa.scalar(v).type) for k, v in part.constants.items()]) for part in parts]
        + [part.schema for part in parts]
    )
    if target.partition_field not in schema.names:
        raise ExportError(
            f"{target.table}: the partition column {target.partition_field!r} is not among the columns {schema.names}"
        )
    renamed = bigquery_column_names(schema.names)
    types = {f.name: _bigquery_arrow_type(f.name, f.type) for f in schema}
    partition = renamed[target.partition_field]
    if types[target.partition_field][1] not in ("TIMESTAMP", "DATETIME", "DATE"):
        raise ExportError(
            f"{target.table}: partition column {target.partition_field!r} is "
            f"{types[target.partition_field][1]}; it must be a TIMESTAMP, DATETIME or DATE"
        )
    clustering = [renamed[c] for c in target.clustering_fields if c in renamed]
    table_columns, added = _plan_table(
        client, target, [(renamed[n], types[n][1]) for n in schema.names], partition, clustering
    )
    source_of = {new.lower(): old for old, new in renamed.items()}
    arrow_of = {name: ARROW_TYPES.get(kind, pa.string()) for name, kind in table_columns}
    plan = []  # (name in the table, Arrow type written, source column or None for NULL)
    for name, _kind in table_columns:
        source = source_of.get(name.lower())
        written = types[source][0] if source is not None else arrow_of[name]
        plan.append((name, written, source))
    file_schema = pa.schema([(name, kind) for name, kind, _ in plan])
    start, end = _day_bounds(day)
    partition_kind = types[target.partition_field][1]
    where = (
        f"`{check_column(partition)}` >= {_literal(partition_kind, start)} AND "
        f"`{partition}` < {_literal(partition_kind, end)}"
    )
    job_ids: list[str] = []

    handle, path = tempfile.mkstemp(prefix=f".export-{day:%Y%m%d}-", suffix=".parquet", dir=staging_dir)
    os.close(handle)
    try:
        rows = 0
        with pq.ParquetWriter(path, file_schema, compression="snappy") as writer:
            for part in parts:
                for batch in part.batches:
                    if not batch.num_rows:
                        continue
                    if target.partition_field not in part.constants:
                        _check_day(batch, target.partition_field, target.partition_field, day)
                    writer.write_batch(_conform(batch, part.constants, plan))
                    rows += batch.num_rows
        size = os.path.getsize(path)

        def run_query(sql: str):
            job = client.query(sql, location=location)
            job.result()
            job_ids.append(job.job_id)
            return job

        def load(destination: str, **options):
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                schema=[bigquery.SchemaField(n, k, mode="NULLABLE") for n, k in table_columns],
                **options,
            )
            with open(path, "rb") as data:  # no size: a resumable upload (100 MiB chunks) whatever the file's size
                job = client.load_table_from_file(data, destination, job_config=config, location=location)
            job.result()
            job_ids.append(job.job_id)
            return job

        if rows == 0:  # nothing to load: the day is emptied (whole partitions: free on BigQuery)
            run_query(f"DELETE FROM {_quoted(target.table)} WHERE {where}")
        elif method == "partition_decorator":
            load(
                f"{target.table}${day:%Y%m%d}",
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
                time_partitioning=bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=partition),
            )
        else:
            project, dataset, name = parse_bigquery_table(target.table)
            staging = f"{project}.{dataset}.{name}__staging_{day:%Y%m%d}_{uuid.uuid4().hex[:8]}"
            staging_table = bigquery.Table(
                staging, schema=[bigquery.SchemaField(n, k, mode="NULLABLE") for n, k in table_columns]
            )
            staging_table.expires = datetime.now(UTC) + STAGING_EXPIRY  # a crash leaves nothing for long
            client.create_table(staging_table)
            try:
                load(staging, write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE)
                columns = ", ".join(f"`{check_column(n)}`" for n, _ in table_columns)
                run_query(
                    "BEGIN TRANSACTION;\n"
                    f"DELETE FROM {_quoted(target.table)} WHERE {where};\n"
                    f"INSERT INTO {_quoted(target.table)} ({columns}) SELECT {columns} FROM {_quoted(staging)};\n"
                    "COMMIT TRANSACTION;"
                )
            finally:
                client.delete_table(staging, not_found_ok=True)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    counted = list(
        client.query(f"SELECT COUNT(*) AS n FROM {_quoted(target.table)} WHERE {where}", location=location).result()
    )
    in_bigquery = int(counted[0][0]) if counted else 0
    if in_bigquery != rows:
        raise ExportError(
            f"{target.table}: {in_bigquery} rows in BigQuery for {day} after the write-back, {rows} "
            "were written (another writer of the same day?); run the export of this day again"
        )
    return ExportResult(
        target.table,
        day,
        method,
        rows,
        in_bigquery,
        size,
        time.perf_counter() - started,
        job_ids,
        {a: b for a, b in renamed.items() if a != b},
        added,
    )


def export_table_id(dataset: str, name: str, default_project: str, prefix: str = "") -> str:
    """``project.dataset.<prefix><name>`` for ``dataset`` given as ``dataset`` or ``project.dataset``."""
    parts = dataset.split(".")
    if len(parts) == 1:
        parts = [default_project, parts[0]]
    if len(parts) != 2:
        raise ValueError(f"export_dataset {dataset!r} must be 'dataset' or 'project.dataset'")
    table = f"{parts[0]}.{parts[1]}.{prefix}{name}"
    parse_bigquery_table(table)
    return table


__all__ = [
    "EXPORT_METHODS",
    "ExportError",
    "ExportPart",
    "ExportResult",
    "ExportTarget",
    "bigquery_column_names",
    "export_partition",
    "export_table_id",
    "resolve_method",
    "unify_schemas",
]
