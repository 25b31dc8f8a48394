"""Resources: the compute backend, the source table, pipeline settings and artifact storage.

Each is a ``ConfigurableResource``, so every field can be changed in run config or
the launchpad; ``setup_for_execution`` validates, so bad configuration fails the
run before any asset does work.

A class's docstring is the resource's description in the Dagster UI (Resources tab, launchpad) and a
field's ``description`` is the launchpad's help for it: both are kept short and for users; the
details live in comments beside them. Settings with a fixed set of values are typed with an ``Enum``
(``_choice``), which Dagster shows as a choice list and checks in the launchpad's editor; the
resource still holds the plain string, and a bad value given in Python fails at once with the
setting's own message, naming it and the allowed values.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from dagster import ConfigurableResource, InitResourceContext
from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer

from emberharmony_core.features.row_checks import ON_DUPLICATE, check_on_duplicate
from emberharmony_core.features.split import validate_fractions
from emberharmony_core.names import DEFAULT_FRACTIONS, FLOAT_DTYPES
from emberharmony_core.ops import BACKEND_NAMES as _BACKENDS
from emberharmony_core.ops import default_threads, describe_backend, get_backend
from emberharmony_core.sources.base import DEFAULT_ROWS_PER_CHUNK, TableSpec
from emberharmony_core.sources.duckdb_source import DEFAULT_MEMORY_LIMIT, DEFAULT_THREADS
from emberharmony_core.store import ARROW_MEMORY_POOLS, ArtifactStore, check_arrow_memory_pool, use_arrow_memory_pool
from emberharmony_core.windowing import parse_duration

# The allowed values of each fixed-choice setting, from the core where it has them.
BACKEND_NAMES = ("auto", *_BACKENDS)  # auto, numpy, torch, mlx
DTYPES = FLOAT_DTYPES  # float32, float64: what the windows and the PCA compute in
STRUCT_FIELDS = ("error", "union")  # emberharmony_core.features.preprocess.stats reads "union"


def _check_setting(setting: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else a ValueError naming ``setting`` and the allowed values."""
    if isinstance(value, str) and value in allowed:
        return value
    choices = " or ".join(map(repr, allowed)) if len(allowed) == 2 else "one of " + ", ".join(map(repr, allowed))
    raise ValueError(f"{setting} must be {choices}, got {value!r}")


def check_backend_name(name: Any) -> str:
    """The backend name, stripped and lower-cased (``get_backend`` accepts "NumPy"), or a ValueError listing the
    names. Whether the chosen library is installed is checked when the run starts (``BackendResource.get``)."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}: the backend name must be one of {', '.join(BACKEND_NAMES)}")
    return key


def _choice(name: str, values: tuple[str, ...], check: Callable[[Any], Any]) -> Any:
    """A field type for a setting with a fixed set of string values.

    Dagster turns the ``Enum`` into a choice list in the launchpad and an enum in the config schema
    (it checks run config against it, naming the setting's path); pydantic runs ``check`` on a value
    given in Python first, so a bad one fails with the setting's own message (naming it and the
    allowed values). The field then holds the plain string (``"float32"``, not ``FloatDtype.float32``):
    f-strings, metadata and the core see what they saw before. A value may be given as the string or
    as the enum's member.
    """
    members = [(value, value) for value in values]

    def validate(value: Any) -> Any:
        value = value.value if isinstance(value, enum.Enum) else value
        checked = check(value)
        return value if checked is None else checked

    return Annotated[
        enum.Enum(name, members, type=str, module=__name__),
        BeforeValidator(validate),
        AfterValidator(lambda member: member.value),
        PlainSerializer(lambda value: getattr(value, "value", value), return_type=str),
    ]


if TYPE_CHECKING:  # what the fields hold once validated: the plain string
    BackendName: TypeAlias = str
    FloatDtype: TypeAlias = str
    OnDuplicate: TypeAlias = str
    StructFields: TypeAlias = str
    ArrowMemoryPool: TypeAlias = str
else:
    BackendName = _choice("BackendName", BACKEND_NAMES, check_backend_name)
    FloatDtype = _choice("FloatDtype", DTYPES, lambda value: _check_setting("dtype", value, DTYPES))
    OnDuplicate = _choice("OnDuplicate", ON_DUPLICATE, check_on_duplicate)
    StructFields = _choice(
        "StructFields", STRUCT_FIELDS, lambda value: _check_setting("struct_fields", value, STRUCT_FIELDS)
    )
    ArrowMemoryPool = _choice("ArrowMemoryPool", ARROW_MEMORY_POOLS, check_arrow_memory_pool)


def data_home() -> str:
    """Where the embedded default keeps its files: ``$EMBERHARMONY_HOME`` or ``./data``."""
    return os.environ.get("EMBERHARMONY_HOME", "data")


class BackendResource(ConfigurableResource):
    """The compute library every asset uses: NumPy, PyTorch or MLX, or auto to pick the fastest one here."""

    # auto: torch on a CUDA device, MLX on Apple silicon, else NumPy (emberharmony_core.ops.get_backend)
    name: BackendName = Field(
        default="auto", description="auto picks torch on a CUDA GPU, MLX on Apple silicon, else numpy"
    )
    # free text, not a choice list: torch takes any cuda:N
    device: str | None = Field(
        default=None, description="torch: cpu, cuda, cuda:N or mps; mlx: cpu or gpu; empty: the backend's default"
    )

    threads: int | None = Field(
        default=None,
        description="CPU threads for matrix products (NumPy's BLAS, torch); empty: one less than the cores, at least 1",
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        chosen = self.get()  # unknown or missing backend fails here, before any asset runs
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"backend threads must be a whole number >= 1, got {self.threads!r}")
        threads = self.threads or default_threads()
        chosen.set_threads(threads)  # the Parquet writer thread keeps a core: see docs/configuration.md
        if context.log is not None:  # in the run's Dagster log: which backend ran, and why for auto
            context.log.info(f"backend {self.name!r} -> {describe_backend(self.name, chosen)}, {threads} CPU threads")

    def get(self):
        return get_backend(self.name, self.device)


class SourceResource(ConfigurableResource):
    """The source table and the role of its columns."""

    # The columns every source shares; subclasses say where the table lives.
    table: str = Field(description="the source table (DuckDB: its name in the file; BigQuery: project.dataset.table)")
    timestamp_column: str = Field(default="ts", description="TIMESTAMP column that puts each row in a day")
    entity_column: str | None = Field(default=None, description="one series per value; windows never cross entities")
    feature_columns: list[str] = Field(default_factory=list, description="numeric input columns")
    datetime_columns: list[str] | None = Field(
        default=None, description="columns turned into cyclical features (default: the timestamp)"
    )
    categorical_columns: list[str] = Field(
        default_factory=list, description="columns one-hot encoded (categories seen in train rows)"
    )
    extra_columns: list[str] = Field(
        default_factory=list, description="columns read and passed along (targets, structs)"
    )

    def spec(self) -> TableSpec:
        return TableSpec(
            table=self.table,
            timestamp_column=self.timestamp_column,
            entity_column=self.entity_column,
            feature_columns=tuple(self.feature_columns),
            datetime_columns=None if self.datetime_columns is None else tuple(self.datetime_columns),
            categorical_columns=tuple(self.categorical_columns),
            extra_columns=tuple(self.extra_columns),
        )

    def open_reader(self, split_key: str | None = None, fractions=DEFAULT_FRACTIONS) -> AbstractContextManager:
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

    def validate_settings(self, settings: PipelineSettings) -> None:
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
    """The source table, read from a DuckDB file (the built-in default)."""

    # Read-only connections through dagster-duckdb.
    database: str = Field(
        default_factory=lambda: os.path.join(data_home(), "demo.duckdb"),
        description="path of the DuckDB file (opened read-only)",
    )
    # memory_limit and threads, and how to size them together: docs/configuration.md (the DuckDB source)
    memory_limit: str = Field(
        default=DEFAULT_MEMORY_LIMIT,
        description="DuckDB's memory for reading a day, e.g. '128MB' or '1GB'; beyond it DuckDB spills to disk",
    )
    threads: int = Field(
        default=DEFAULT_THREADS,
        description="DuckDB's threads for reading a day; each needs about "
        "40 MB of memory_limit, so raise both together",
    )

    @contextmanager
    def open_reader(self, split_key: str | None = None, fractions=DEFAULT_FRACTIONS):
        from dagster_duckdb import DuckDBResource

        from emberharmony_core.sources.duckdb_source import DuckDBTableReader, check_database_file, read_settings

        settings = read_settings(self.memory_limit, self.threads)  # a bad value fails naming it, not DuckDB's parser
        database = check_database_file(self.database)
        duckdb_resource = DuckDBResource(database=database, connection_config={"access_mode": "READ_ONLY", **settings})
        with duckdb_resource.get_connection() as connection:  # one read-only connection for every window
            try:
                yield DuckDBTableReader(database, self.spec(), connect=lambda: nullcontext(connection))
            finally:  # dagster-duckdb closes it only when the block succeeds: close it on failure too
                connection.close()


class PipelineSettings(ConfigurableResource):
    """How rows become windows and components: window size, strides, split, precision, unusual rows."""

    # Every setting's default and what it does: docs/configuration.md; max_gap and split_block, and why both
    # are off by default: docs/windowing.md.

    window_size: int = Field(default=5, description="rows per window (consecutive rows of one entity)")
    strides: list[int] = Field(default_factory=lambda: [1, 3, 5], description="window strides; one PCA per stride")
    n_components: int = Field(default=32, description="principal components kept per stride")
    split_fractions: list[float] = Field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        description="train, validation, test shares (whole percents, summing to 1)",
    )
    split_key: str | None = Field(
        default=None,
        description="column hashed for the split; default: the entity column, or the day when there is none",
    )
    dtype: FloatDtype = Field(
        default="float32", description="precision of windows and projections: float32 (faster) or float64"
    )
    null_threshold: float = Field(
        default=0.9, description="drop feature columns whose share of nulls in train rows exceeds this"
    )
    drop_columns: list[str] = Field(default_factory=list, description="columns left out before anything else")
    force_categorical_columns: list[str] = Field(
        default_factory=list, description="columns treated as categorical whatever their type"
    )
    target_column: str | None = Field(default=None, description="kept aside, never a feature")
    max_categories: int = Field(default=50, description="most frequent categories kept per column (>= 1)")
    # memory follows rows_per_chunk, results do not
    rows_per_chunk: int = Field(
        default=DEFAULT_ROWS_PER_CHUNK, description="rows read and processed at a time; lower it to use less memory"
    )
    # dropped windows are counted per partition as gap_dropped_stride_S
    max_gap: str | None = Field(
        default=None,
        description="a duration ('2h', '1d', '90min'): windows with a "
        "bigger gap between two rows are not made (and are counted); empty: off",
    )
    # "7d" splits by ISO week
    split_block: str | None = Field(
        default=None,
        description="a duration ('7d'): with no split_key or entity column, split by time block instead of by day",
    )
    # keep_last: ties come in the engine's order; mean: every non-numeric column must agree
    # (emberharmony_core.features.row_checks)
    on_duplicate: OnDuplicate = Field(
        default="error",
        description="rows with the same entity and timestamp: error "
        "fails the day naming them; keep_last keeps the last; mean averages them",
    )
    # error names both partitions; union leaves a field null in the partitions that lack it
    struct_fields: StructFields = Field(
        default="error",
        description="a STRUCT column whose fields differ between "
        "days: error fails; union keeps every field (then re-materialise "
        "preprocess_stats)",
    )
    # system returns chunk buffers to the OS (emberharmony_core.store.use_arrow_memory_pool; measured:
    # docs/benchmarks.md, Arrow's allocator)
    arrow_memory_pool: ArrowMemoryPool | None = Field(
        default=None,
        description="Arrow's memory allocator for the run; empty: system, unless $ARROW_DEFAULT_MEMORY_POOL names one",
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.validate()
        use_arrow_memory_pool(self.arrow_memory_pool)

    # Complexity: a flat checklist, one if per setting, each raising with the setting and its value.
    # pydantic's deprecated classmethod BaseModel.validate (v1 API) is shadowed on purpose: settings.validate()
    def validate(self) -> PipelineSettings:  # type: ignore[override]  # noqa: C901
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
        _check_setting("dtype", self.dtype, DTYPES)  # the field's type checked these: again for model_construct
        if not 0.0 < self.null_threshold <= 1.0:
            raise ValueError(f"null_threshold must be in (0, 1], got {self.null_threshold}")
        validate_fractions(tuple(self.split_fractions))
        if self.split_fractions[0] <= 0:
            raise ValueError(
                f"split_fractions {list(self.split_fractions)}: the train fraction is 0, but the "
                "preprocessor and the PCA models are fitted on train rows only; give train a share, "
                "e.g. [0.8, 0.1, 0.1]"
            )
        check_on_duplicate(self.on_duplicate)
        _check_setting("struct_fields", self.struct_fields, STRUCT_FIELDS)
        check_arrow_memory_pool(self.arrow_memory_pool)
        parse_duration("max_gap", self.max_gap)  # a bad duration raises naming the setting and the value
        if self.split_block is not None:
            parse_duration("split_block", self.split_block)
            if self.split_key is not None:
                raise ValueError(
                    f"split_block ({self.split_block!r}) and split_key ({self.split_key!r}) are both set: "
                    "split_block replaces the partition-date key only when there is no split key "
                    "column; unset one of them"
                )
        return self

    def schema_settings(self) -> dict:
        """The settings that name source columns, as ``TableReader.validate`` / ``validate_schema`` take them."""
        return dict(
            drop_columns=tuple(self.drop_columns),
            target_column=self.target_column,
            split_key=self.split_key,
            force_categorical_columns=tuple(self.force_categorical_columns),
            max_categories=self.max_categories,
        )


class ArtifactStoreResource(ConfigurableResource):
    """Where the assets write their files (Parquet, Arrow, JSON): a local folder or a gs:// URI."""

    # Every run (every step process, with the multiprocess executor) holds the store's writers lock
    # SHARED from resource setup to teardown (yield_for_execution, which also runs the setup and
    # teardown hooks): runs may write at once (a partition file's writes serialise on its own lock),
    # while ArtifactStore.wipe() (main.py --fresh) fails at once naming their pids. Local
    # folders only; on fsspec URLs the locks are no-ops (emberharmony_core.store).

    base_path: str = Field(
        default_factory=lambda: os.path.join(data_home(), "artifacts"),
        description="a local folder or an fsspec URL such as gs://bucket/prefix",
    )

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


__all__ = [
    "BackendResource",
    "SourceResource",
    "DuckDBSourceResource",
    "PipelineSettings",
    "ArtifactStoreResource",
    "data_home",
    "BACKEND_NAMES",
    "DTYPES",
    "STRUCT_FIELDS",
    "check_backend_name",
]
