"""Resources: the compute backend, the source table, pipeline settings and artifact storage.

Each is a ``ConfigurableResource``, so every field can be changed in run config or
the launchpad; ``setup_for_execution`` validates, so bad configuration fails the
run before any asset does work.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Optional

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from emberharmony_core.features.row_checks import check_on_duplicate
from emberharmony_core.features.split import validate_fractions
from emberharmony_core.ops import describe_backend, get_backend
from emberharmony_core.sources.base import DEFAULT_ROWS_PER_CHUNK, TableSpec
from emberharmony_core.sources.duckdb_source import DEFAULT_MEMORY_LIMIT, DEFAULT_THREADS
from emberharmony_core.store import ArtifactStore, check_arrow_memory_pool, use_arrow_memory_pool
from emberharmony_core.windowing import parse_duration


def data_home() -> str:
    """Where the embedded default keeps its files: ``$EMBERHARMONY_HOME`` or ``./data``."""
    return os.environ.get("EMBERHARMONY_HOME", "data")


class BackendResource(ConfigurableResource):
    """Which compute backend every asset uses: auto, numpy, torch or mlx (plus a device)."""

    name: str = Field(default="auto", description="auto | numpy | torch | mlx")
    device: Optional[str] = Field(default=None, description="torch: cpu/cuda/cuda:N/mps; mlx: cpu/gpu")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        chosen = self.get()  # unknown or missing backend fails here, before any asset runs
        if context.log is not None:  # in the run's Dagster log: which backend ran, and why for auto
            context.log.info(f"backend {self.name!r} -> {describe_backend(self.name, chosen)}")

    def get(self):
        return get_backend(self.name, self.device)


class SourceResource(ConfigurableResource):
    """The columns every source shares. Subclasses say where the table lives."""

    table: str = Field(description="the source table (DuckDB: name in the file; BigQuery: project.dataset.table)")
    timestamp_column: str = Field(default="ts", description="TIMESTAMP column that places each row in a daily partition")
    entity_column: Optional[str] = Field(default=None, description="separate series; windows never cross entities")
    feature_columns: list[str] = Field(default_factory=list, description="numeric inputs")
    datetime_columns: Optional[list[str]] = Field(default=None, description="cyclical features (default: timestamp)")
    categorical_columns: list[str] = Field(default_factory=list, description="columns one-hot encoded with the train vocabulary")
    extra_columns: list[str] = Field(default_factory=list, description="read and passed along (targets, structs)")

    def spec(self) -> TableSpec:
        return TableSpec(table=self.table, timestamp_column=self.timestamp_column, entity_column=self.entity_column,
                         feature_columns=tuple(self.feature_columns), datetime_columns=self.datetime_columns,
                         categorical_columns=tuple(self.categorical_columns), extra_columns=tuple(self.extra_columns))

    def open_reader(self, split_key: Optional[str] = None, fractions=(0.8, 0.1, 0.1)) -> ContextManager:
        """A context manager yielding a ``TableReader`` (a connection or client held while it is open).

        ``split_key`` and ``fractions`` matter only to sources that compute the split themselves.
        """
        raise NotImplementedError

    def computes_split_and_cyclical(self) -> bool:
        """True when the rows arrive with ``split`` and the cyclical columns already computed (pushdown)."""
        return False

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if not self.feature_columns:
            raise ValueError("source feature_columns is empty: name at least one numeric column")
        with self.open_reader() as reader:
            reader.validate()  # a typo'd column or a wrongly typed one fails here, naming it

    def validate_settings(self, settings: "PipelineSettings") -> None:
        """Check ``settings`` against this source's table before any asset writes (one schema read, no rows).

        ``settings.validate()``, then every column the settings name (``split_key``, ``target_column``,
        ``force_categorical_columns``, ``drop_columns``) must exist and be read, and every source column
        must exist with a type that fits its role; one ``ValueError`` lists every problem. The settings
        are a resource of their own, so assets call this first thing (a resource cannot see the other).
        """
        settings.validate()
        with self.open_reader() as reader:
            reader.validate(**settings.schema_settings())


class DuckDBSourceResource(SourceResource):
    """The embedded default: a table in a DuckDB file (read-only connections via dagster-duckdb)."""

    database: str = Field(default_factory=lambda: os.path.join(data_home(), "demo.duckdb"),
                          description="path of the DuckDB file (opened read-only)")
    memory_limit: str = Field(default=DEFAULT_MEMORY_LIMIT, description="DuckDB's memory for a partition's ordered "
                              "read; beyond it the sort spills to DuckDB's temporary folder, so memory does not grow "
                              "with a day's rows")
    threads: int = Field(default=DEFAULT_THREADS, description="DuckDB's threads for that read. Each sorting thread "
                         "needs about 40 MB of memory_limit, so the default does not follow the machine's cores "
                         "(DuckDB's own default): with 8 or 16 threads, a 3,000,000-row day does not fit in 128MB. "
                         "Raise memory_limit with it")

    @contextmanager
    def open_reader(self, split_key: Optional[str] = None, fractions=(0.8, 0.1, 0.1)):
        from dagster_duckdb import DuckDBResource

        from emberharmony_core.sources.duckdb_source import DuckDBTableReader, check_database_file, read_settings

        settings = read_settings(self.memory_limit, self.threads)  # a bad value fails naming it, not DuckDB's parser
        # a missing file fails at once, naming the path (a read-only connect to it would be retried ~100 s)
        database = check_database_file(self.database)
        duckdb_resource = DuckDBResource(database=database, connection_config={"access_mode": "READ_ONLY", **settings})
        with duckdb_resource.get_connection() as connection:  # one read-only connection for every window
            try:
                yield DuckDBTableReader(database, self.spec(), connect=lambda: nullcontext(connection))
            finally:  # dagster-duckdb closes it only when the block succeeds: close it on failure too
                connection.close()


class PipelineSettings(ConfigurableResource):
    """The seed's knobs, with its defaults.

    max_gap (off by default): a duration; a window two of whose consecutive rows are more than
    max_gap apart is not made, and is counted (the rule: emberharmony_core.windowing). It is off
    because inferring it from the cadence is ambiguous: irregular series (events, trades, report-on-change
    sensors), a cadence that changes over time or differs between entities, and series sparse by nature
    (weekdays only: a weekend is not a gap) each make a median step wrong for part of the data, and a
    wrong guess drops windows silently. Off, every window is made; set it when you know the cadence.

    split_block (off by default): a duration such as "7d"; used only when there is no split key
    column (no split_key, no entity column), where the split key is otherwise the partition date.
    Rows are split by the time block they fall in (emberharmony_core.features.split_blocks), so only
    windows crossing a block boundary can mix splits; "1d" equals the partition-date default.
    """

    window_size: int = Field(default=5, description="rows per window (consecutive rows of one entity)")
    strides: list[int] = Field(default_factory=lambda: [1, 3, 5], description="window strides; one PCA per stride")
    n_components: int = Field(default=32, description="principal components kept per stride")
    split_fractions: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1],
                                         description="train, validation, test shares (whole percents, summing to 1)")
    split_key: Optional[str] = Field(default=None, description="column hashed for the split; default: the entity "
                                     "column, or the partition date when there is none")
    dtype: str = Field(default="float32", description="float32 (fast path) or float64 for windows and projections")
    null_threshold: float = Field(default=0.9, description="drop feature columns whose train null share exceeds this")
    drop_columns: list[str] = Field(default_factory=list, description="columns left out before anything else")
    force_categorical_columns: list[str] = Field(default_factory=list,
                                                 description="columns treated as categorical whatever their type")
    target_column: Optional[str] = Field(default=None, description="kept aside, never a feature")
    max_categories: int = Field(default=50, description="most frequent categories kept per column (>= 1)")
    rows_per_chunk: int = Field(default=DEFAULT_ROWS_PER_CHUNK, description="rows read, processed and written at a time; "
                                "memory follows it, results do not")
    max_gap: Optional[str] = Field(default=None, description="a duration ('2h', '1d', '90min'): windows two of whose "
                                   "consecutive rows are further apart are not made (counted per partition as "
                                   "gap_dropped_stride_S); default off")
    split_block: Optional[str] = Field(default=None, description="a duration ('7d'): without split_key and entity "
                                       "column, hash the time block a row falls in (7d = ISO weeks) instead of the "
                                       "partition date, so fewer windows mix splits")
    on_duplicate: str = Field(default="error", description="rows sharing one (entity, timestamp): 'error' (default) "
                              "fails the partition naming them; 'keep_last' keeps the last in the source's order "
                              "(ties come in the engine's order); 'mean' averages the numeric features, every other "
                              "column must agree (emberharmony_core.features.row_checks)")
    struct_fields: str = Field(default="error", description="a STRUCT column whose fields differ between partitions: "
                               "'error' (default) fails the preprocessor naming both partitions; 'union' takes every "
                               "field seen, null in the partitions that lack it (re-materialise preprocess_stats "
                               "after changing it)")
    arrow_memory_pool: Optional[str] = Field(default=None, description="Arrow's allocator in the run's process: "
                                             "system | mimalloc | jemalloc; default system unless "
                                             "$ARROW_DEFAULT_MEMORY_POOL names one (system returns chunk buffers "
                                             "to the OS: 45-90 MiB lower peak, same speed; "
                                             "emberharmony_core.store.use_arrow_memory_pool)")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.validate()
        use_arrow_memory_pool(self.arrow_memory_pool)

    def validate(self) -> "PipelineSettings":
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if not self.strides:
            raise ValueError("strides is empty: give at least one stride, e.g. [1, 3, 5]")
        bad = [s for s in self.strides if s < 1]
        if bad:
            raise ValueError(f"every stride must be >= 1, got {bad}")
        if len(set(self.strides)) != len(self.strides):
            raise ValueError(f"strides repeat a value: {self.strides}")
        if self.rows_per_chunk < 1:
            raise ValueError(f"rows_per_chunk must be >= 1, got {self.rows_per_chunk}")
        if isinstance(self.max_categories, bool) or self.max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {self.max_categories}")
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not 0.0 < self.null_threshold <= 1.0:
            raise ValueError(f"null_threshold must be in (0, 1], got {self.null_threshold}")
        validate_fractions(tuple(self.split_fractions))
        if self.split_fractions[0] <= 0:
            raise ValueError(f"split_fractions {list(self.split_fractions)}: the train fraction is 0, but the "
                             "preprocessor and the PCA models are fitted on train rows only; give train a share, "
                             "e.g. [0.8, 0.1, 0.1]")
        check_on_duplicate(self.on_duplicate)
        if self.struct_fields not in ("error", "union"):
            raise ValueError(f"struct_fields must be 'error' or 'union', got {self.struct_fields!r}")
        check_arrow_memory_pool(self.arrow_memory_pool)
        parse_duration("max_gap", self.max_gap)  # a bad duration raises naming the setting and the value
        if self.split_block is not None:
            parse_duration("split_block", self.split_block)
            if self.split_key is not None:
                raise ValueError(f"split_block ({self.split_block!r}) and split_key ({self.split_key!r}) are both set: "
                                 "split_block replaces the partition-date key only when there is no split key "
                                 "column; unset one of them")
        return self

    def schema_settings(self) -> dict:
        """The settings that name source columns, as ``TableReader.validate`` / ``validate_schema`` take them."""
        return dict(drop_columns=tuple(self.drop_columns), target_column=self.target_column, split_key=self.split_key,
                    force_categorical_columns=tuple(self.force_categorical_columns),
                    max_categories=self.max_categories)


class ArtifactStoreResource(ConfigurableResource):
    """Where artifacts live: a local folder or an fsspec URL (gs://bucket/prefix).

    Every run (every step process, with the multiprocess executor) holds the store's writers lock
    SHARED from resource setup to teardown (yield_for_execution, which also runs the setup and
    teardown hooks): runs may write at once (a partition file's writes serialise on its own lock),
    while ArtifactStore.wipe() (main.py --fresh) fails at once naming their pids. Local
    folders only; on fsspec URLs the locks are no-ops (emberharmony_core.store).
    """

    base_path: str = Field(default_factory=lambda: os.path.join(data_home(), "artifacts"),
                           description="local folder or fsspec URL (gs://bucket/prefix) of the artifacts")

    def get(self) -> ArtifactStore:
        return ArtifactStore(self.base_path)

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext):
        run = getattr(context, "run", None)
        owner = f"run {run.run_id[:8]} ({run.job_name})" if run is not None else "a Dagster execution"
        with self.get().writers_lock(owner=owner):
            self.setup_for_execution(context)
            try:
                yield self
            finally:
                self.teardown_after_execution(context)


__all__ = ["BackendResource", "SourceResource", "DuckDBSourceResource", "PipelineSettings",
           "ArtifactStoreResource", "data_home"]
