"""BigQuery source: one parameterised query per time window, fetched as Arrow in pages.

``BigQueryTableReader`` implements ``base.TableReader``:

* identifiers (``project.dataset.table`` and every column) are validated and quoted
  when the reader is built, before the client is touched (``sql.py``);
* ``iter_window(start, end, rows_per_chunk)`` first checks the configured columns
  against the table's schema (one ``tables.get``; a typo'd column fails naming it,
  no query is run), then -- at the first chunk -- runs ONE query ``SELECT <configured
  columns> ... WHERE ts >= @start AND ts < @end ORDER BY entity NULLS LAST, ts``
  with TIMESTAMP query parameters;
* rows come back as Arrow record batches: through the BigQuery Storage Read API
  when it is available (gRPC streams, several times faster than REST for large
  results), through ``tabledata.list`` pages (REST) otherwise, and are regrouped
  into pandas chunks of exactly ``rows_per_chunk`` rows (``base.iter_pandas_chunks``).
  Python memory is bounded by one chunk plus one batch: REST pages are at most
  ``min(page_size, rows_per_chunk)`` rows; Storage API messages are sized by the
  server (the ``ORDER BY`` makes google-cloud-bigquery read ONE stream, so the order
  survives and at most one message is queued);
* ``read_window(start, end)`` is the concatenation of those chunks;
* bytes processed / billed, rows, pages, chunks, seconds and whether the Storage API
  was used are logged and returned in the stream's / ``WindowRead``'s metadata.

Storage API decision (``use_storage_api``): ``False`` -> REST; ``True`` -> Storage
API (``ImportError`` if ``google-cloud-bigquery-storage`` is missing); ``None``
(default) -> Storage API when a ``bqstorage_client`` was passed, or when the package
is installed and the client is not pointed at an emulator (``BIGQUERY_EMULATOR_HOST``
or a non-googleapis endpoint: an emulator's gRPC port is not the client's default).
google-cloud-bigquery itself still reads a result that fits in the query's first
page from that page; ``metadata["storage_api"]`` reports what was really used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

from .base import (
    DEFAULT_ROWS_PER_CHUNK,
    TableSpec,
    WindowRead,
    WindowStream,
    as_utc,
    check_rows_per_chunk,
    validate_columns,
)
from .sql import bigquery_window_query, parse_bigquery_table

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100_000
"""Rows per REST page (``tabledata.list``), at most ``rows_per_chunk``; the Storage API sizes its own messages."""

# BigQuery type -> Arrow type, for the schema of an empty result (google-cloud-bigquery's
# own mapping for non-empty results gives the same types).
ARROW_TYPES = {
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
}


def is_emulator(client: Any) -> bool:
    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        return True
    endpoint = getattr(getattr(client, "_connection", None), "API_BASE_URL", "") or ""
    return bool(endpoint) and "googleapis.com" not in endpoint


class BigQueryTableReader:
    """Read ``spec`` from BigQuery one half-open time window at a time.

    Parameters
    ----------
    client : google.cloud.bigquery.Client
        Runs the queries (its project pays for them).
    spec : TableSpec
        ``spec.table`` is ``"project.dataset.table"``.
    use_storage_api : bool or None
        See the module docstring; ``None`` decides automatically.
    page_size : int
        Rows per REST page (a stream uses ``min(page_size, rows_per_chunk)``).
    bqstorage_client : google.cloud.bigquery_storage.BigQueryReadClient, optional
        Reuse one Storage Read client (created lazily otherwise).
    maximum_bytes_billed : int, optional
        Cost guard passed to every query job: BigQuery fails the job instead of
        billing more.
    """

    def __init__(
        self,
        client: Any,
        spec: TableSpec,
        *,
        use_storage_api: bool | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        bqstorage_client: Any = None,
        maximum_bytes_billed: int | None = None,
    ):
        # Validate every identifier before anything touches the client.
        self._table_parts = parse_bigquery_table(spec.table)
        self._query = bigquery_window_query(spec.table, spec.columns, spec.timestamp_column, spec.order_by)
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.client = client
        self.spec = spec
        self.use_storage_api = use_storage_api
        self.page_size = int(page_size)
        self.maximum_bytes_billed = maximum_bytes_billed
        self._bqstorage_client = bqstorage_client
        self._columns = list(spec.columns)  # the query's output columns (pushdown adds its own)
        self._column_types: dict[str, str] | None = None
        self._validated = False

    @property
    def query(self) -> str:
        """The parameterised window query (``@start``, ``@end``)."""
        return self._query

    def column_types(self) -> Mapping[str, str]:
        """Column name -> BigQuery type name, from the table's schema (one ``tables.get``)."""
        if self._column_types is None:
            table = self.client.get_table(".".join(self._table_parts))
            self._column_types = {field.name: field.field_type for field in table.schema}
        return self._column_types

    dialect = "bigquery"

    def validate(self, **settings) -> None:
        """Check the configured columns (they exist, their types fit their roles) and the ``settings`` that
        name columns against the table's schema; one ``ValueError`` lists every problem (``schema.py``).
        No query is run."""
        validate_columns(self.spec, self.column_types(), self.dialect, **settings)
        self._validated = True

    def storage_client(self) -> Any | None:
        """The Storage Read client to use, or ``None`` for REST (the decision in the module docstring)."""
        if self.use_storage_api is False:
            return None
        if self._bqstorage_client is not None:
            return self._bqstorage_client
        try:
            from google.cloud import bigquery_storage
        except ImportError:
            if self.use_storage_api:
                raise ImportError(
                    "use_storage_api=True needs google-cloud-bigquery-storage (pip install 'emberharmony[bigquery]')"
                ) from None
            return None
        if self.use_storage_api is None and is_emulator(self.client):
            return None
        self._bqstorage_client = bigquery_storage.BigQueryReadClient(
            credentials=getattr(self.client, "_credentials", None)
        )
        return self._bqstorage_client

    def iter_window(self, start: datetime, end: datetime, rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK) -> WindowStream:
        """Rows with ``start <= timestamp < end``, only ``spec.columns``, as chunks of ``rows_per_chunk`` rows
        in (entity NULLS LAST, timestamp) order (see ``base.WindowStream``: an empty window yields no chunk).

        The columns are checked now; the query runs at the first chunk (or ``empty_frame()``).
        """
        rows_per_chunk = check_rows_per_chunk(rows_per_chunk)
        lower, upper = as_utc(start), as_utc(end)
        if upper < lower:
            raise ValueError(f"window end {upper} is before its start {lower}")
        if not self._validated:
            self.validate()
        query = self._query

        def produce(metadata: dict):
            from google.cloud import bigquery

            bqstorage = self.storage_client()
            started = time.perf_counter()
            job_config = bigquery.QueryJobConfig(
                query_parameters=[
                    bigquery.ScalarQueryParameter("start", "TIMESTAMP", lower.to_pydatetime()),
                    bigquery.ScalarQueryParameter("end", "TIMESTAMP", upper.to_pydatetime()),
                ]
            )
            if self.maximum_bytes_billed is not None:
                job_config.maximum_bytes_billed = int(self.maximum_bytes_billed)
            job = self.client.query(query, job_config=job_config)
            # raises on a failed job (query_and_wait may not); pages no larger than a chunk
            rows = job.result(page_size=min(self.page_size, rows_per_chunk))
            queried = time.perf_counter()

            used_storage = bqstorage is not None
            if used_storage:
                should_use = getattr(rows, "_should_use_bqstorage", None)
                if should_use is not None:
                    with contextlib.suppress(Exception):  # private helper changed: report what we asked for
                        used_storage = bool(should_use(bqstorage, create_bqstorage_client=False))
            metadata.update(
                {
                    "job_id": job.job_id,
                    "location": getattr(job, "location", None),
                    "bytes_processed": job.total_bytes_processed,
                    "bytes_billed": job.total_bytes_billed,
                    "cache_hit": getattr(job, "cache_hit", None),
                    "storage_api": used_storage,
                    "query_seconds": round(queried - started, 4),
                }
            )
            n_rows = 0
            batches = rows.to_arrow_iterable(bqstorage_client=bqstorage)
            try:
                first = next(batches, None)
                # the schema: the first batch's (even with 0 rows), else one built from the result's schema
                yield first.schema if first is not None else self._empty_table(rows.schema).schema
                for batch in [first] if first is not None else []:
                    metadata["pages"] += 1
                    metadata["bytes_read"] += int(batch.nbytes)
                    n_rows += batch.num_rows
                    yield batch
                for batch in batches:
                    metadata["pages"] += 1
                    metadata["bytes_read"] += int(batch.nbytes)
                    n_rows += batch.num_rows
                    logger.debug(
                        "bigquery %s [%s, %s): page %d, %d rows so far",
                        self.spec.table,
                        lower,
                        upper,
                        metadata["pages"],
                        n_rows,
                    )
                    yield batch
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()
            logger.info(
                "bigquery %s [%s, %s): %d rows in %d pages, %s bytes processed, %s billed, %.2fs (%s)",
                self.spec.table,
                lower,
                upper,
                n_rows,
                metadata["pages"],
                metadata["bytes_processed"],
                metadata["bytes_billed"],
                time.perf_counter() - started,
                "storage API" if used_storage else "REST",
            )

        return WindowStream(
            self.spec,
            self._columns,
            rows_per_chunk,
            produce,
            {
                "source": "bigquery",
                "table": self.spec.table,
                "job_id": None,
                "location": None,
                "rows": 0,
                "pages": 0,
                "bytes_processed": None,
                "bytes_billed": None,
                "cache_hit": None,
                "bytes_read": 0,
                "storage_api": None,
                "query_seconds": None,
                "seconds": 0.0,
                "query": query,
            },
        )

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """Rows with ``start <= timestamp < end``, only ``spec.columns``, in (entity NULLS LAST, timestamp)
        order: the concatenation of ``iter_window``'s chunks."""
        return self.iter_window(start, end).read()

    def _empty_table(self, schema) -> pa.Table:
        fields = [pa.field(f.name, ARROW_TYPES.get(f.field_type, pa.string())) for f in schema or ()]
        if not fields:
            types = self.column_types()
            fields = [pa.field(c, ARROW_TYPES.get(types.get(c, "STRING"), pa.string())) for c in self.spec.columns]
        return pa.schema(fields).empty_table()


__all__ = ["BigQueryTableReader", "DEFAULT_PAGE_SIZE"]
