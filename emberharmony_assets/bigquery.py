"""The BigQuery source resource, built on dagster-gcp's ``BigQueryResource``.

Switching from the embedded DuckDB default is configuration only: set
``EMBERHARMONY_SOURCE=bigquery`` (plus the ``EMBERHARMONY_BQ_*`` variables below),
or bind ``BigQuerySourceResource`` as ``source`` yourself. Every downstream asset
is unchanged.

Write-back (off by default): ``export_dataset`` (``EMBERHARMONY_BQ_EXPORT_DATASET``) makes the
``bigquery_features`` and ``bigquery_projected_windows`` assets write ``features`` and
``projected_windows`` to day-partitioned tables there (``emberharmony_assets.assets.export``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import EnvVar
from dagster_gcp import BigQueryResource
from pydantic import Field

from emberharmony_core.layout import FEATURES
from emberharmony_core.names import DEFAULT_FRACTIONS
from emberharmony_core.sources.bigquery import BigQueryTableReader
from emberharmony_core.sources.bigquery_export import EXPORT_METHODS, export_table_id
from emberharmony_core.sources.pushdown import BigFramesPushdownReader, BigQueryPushdownReader

from .resources import SourceResource


class BigQuerySourceResource(SourceResource):
    """A BigQuery table read one partition window at a time (``table`` = ``project.dataset.table``).

    Credentials: Google's standard chain, or ``gcp_credentials`` (a base64 service-account
    key, as dagster-gcp takes it). With ``BIGQUERY_EMULATOR_HOST`` set, the client talks to
    that emulator with anonymous credentials.
    """

    project: str | None = Field(default=None, description="project that runs (and pays for) the queries")
    location: str | None = Field(default=None, description="dataset location, e.g. US or EU")
    gcp_credentials: str | None = Field(default=None, description="base64 service-account key (optional)")
    use_storage_api: bool | None = Field(default=None, description="None: Storage Read API when available")
    maximum_bytes_billed: int | None = Field(default=None, description="fail a query that would bill more")
    pushdown: bool = Field(default=False, description="compute split and cyclical features inside BigQuery")
    pushdown_engine: str = Field(
        default="sql",
        description="sql: one query through the BigQuery client; bigframes: the same query through a bigframes session",
    )
    export_dataset: str | None = Field(
        default=None,
        description="write-back (off when empty): the dataset "
        "('dataset' in the job project, or 'project.dataset') that receives "
        "features and projected_windows as tables partitioned by day",
    )
    export_table_prefix: str = Field(
        default="", description="prefix of the write-back tables' names (<prefix>features, <prefix>projected_windows)"
    )
    export_method: str = Field(
        default="auto",
        description="how a day is replaced: partition_decorator (one "
        "WRITE_TRUNCATE load job on table$YYYYMMDD), transaction (staging table, then "
        "DELETE + INSERT in one transaction), auto (transaction on an emulator, "
        "partition_decorator on BigQuery)",
    )

    def export_table(self, name: str) -> str | None:
        """``project.dataset.<prefix><name>`` of the write-back table for asset ``name``, or None when off."""
        if not self.export_dataset:
            return None
        return export_table_id(
            self.export_dataset, name, self.project or self.table.split(".")[0], self.export_table_prefix
        )

    def setup_for_execution(self, context) -> None:
        super().setup_for_execution(context)
        if self.export_method not in EXPORT_METHODS:
            raise ValueError(f"export_method must be one of {', '.join(EXPORT_METHODS)}, got {self.export_method!r}")
        self.export_table(FEATURES)  # a malformed export_dataset / prefix fails here, naming it

    def _bigquery(self) -> BigQueryResource:
        return BigQueryResource(project=self.project, location=self.location, gcp_credentials=self.gcp_credentials)

    @contextmanager
    def client(self) -> Iterator:
        host = os.environ.get("BIGQUERY_EMULATOR_HOST")
        if host:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import bigquery

            endpoint = host if host.startswith("http") else f"http://{host}"
            yield bigquery.Client(
                project=self.project or self.table.split(".")[0],
                location=self.location,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=endpoint),
            )
            return
        with self._bigquery().get_client() as client:
            yield client

    @contextmanager
    def bigframes_session(self):
        """A bigframes session of its own (never the process-global one), closed afterwards."""
        import bigframes

        with self.client() as client:  # the same credentials the client resolved
            session = bigframes.connect(
                bigframes.BigQueryOptions(
                    project=self.project or client.project, location=self.location, credentials=client._credentials
                )
            )
        try:
            yield session
        finally:
            session.close()

    def computes_split_and_cyclical(self) -> bool:
        return self.pushdown

    @contextmanager
    def open_reader(self, split_key: str | None = None, fractions=DEFAULT_FRACTIONS):
        if self.pushdown and split_key is not None and self.pushdown_engine == "bigframes":
            with self.bigframes_session() as session:
                yield BigFramesPushdownReader(session, self.spec(), split_key=split_key, fractions=tuple(fractions))
            return
        if self.pushdown_engine not in ("sql", "bigframes"):
            raise ValueError(f"pushdown_engine must be 'sql' or 'bigframes', got {self.pushdown_engine!r}")
        with self.client() as client:
            if self.pushdown and split_key is not None:
                yield BigQueryPushdownReader(
                    client,
                    self.spec(),
                    split_key=split_key,
                    fractions=tuple(fractions),
                    use_storage_api=self.use_storage_api,
                    maximum_bytes_billed=self.maximum_bytes_billed,
                )
            else:  # plain rows (also what setup_for_execution validates the columns with)
                yield BigQueryTableReader(
                    client,
                    self.spec(),
                    use_storage_api=self.use_storage_api,
                    maximum_bytes_billed=self.maximum_bytes_billed,
                )


def bigquery_source_from_env() -> BigQuerySourceResource:
    """``EMBERHARMONY_BQ_TABLE`` (required), ``_PROJECT``, ``_LOCATION``, ``_CREDENTIALS`` (base64 key),
    ``_COLUMNS`` (JSON: timestamp_column, entity_column, feature_columns, ...), ``_PUSHDOWN`` (1/0),
    ``_EXPORT_DATASET`` (write-back on), ``_EXPORT_PREFIX``, ``_EXPORT_METHOD``."""
    table = os.environ.get("EMBERHARMONY_BQ_TABLE")
    if not table:
        raise ValueError("EMBERHARMONY_SOURCE=bigquery needs EMBERHARMONY_BQ_TABLE=project.dataset.table")
    try:
        columns = json.loads(os.environ.get("EMBERHARMONY_BQ_COLUMNS", "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(f"EMBERHARMONY_BQ_COLUMNS is not valid JSON: {error}") from error
    credentials = EnvVar("EMBERHARMONY_BQ_CREDENTIALS") if os.environ.get("EMBERHARMONY_BQ_CREDENTIALS") else None
    return BigQuerySourceResource(
        table=table,
        project=os.environ.get("EMBERHARMONY_BQ_PROJECT"),
        location=os.environ.get("EMBERHARMONY_BQ_LOCATION"),
        gcp_credentials=credentials,
        pushdown=os.environ.get("EMBERHARMONY_BQ_PUSHDOWN", "0") == "1",
        export_dataset=os.environ.get("EMBERHARMONY_BQ_EXPORT_DATASET") or None,
        export_table_prefix=os.environ.get("EMBERHARMONY_BQ_EXPORT_PREFIX", ""),
        export_method=os.environ.get("EMBERHARMONY_BQ_EXPORT_METHOD", "auto"),
        **columns,
    )
