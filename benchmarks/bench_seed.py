"""The seed's pipeline end to end, faithfully (flaws included): the baseline of ``make bench-graph``.

    python -m benchmarks.bench_seed --database PATH [--table sensor_readings]
        [--chunk-size 100000] [--batch-size 10000] [--window 5] [--strides 1 3 5] [--components 32]
        [--target load_next_hour] [--categorical site status] [--json PATH]

A re-implementation of the user's ``TerabyteFeatureExtractor.prepare_data`` followed by
``TerabyteTemporalStrideProcessor.process_large_dataset`` (the seed's "Example usage"),
reading an embedded DuckDB table where the seed reads BigQuery through bigframes, with the
NumPy backend (the seed's ``backend_utils`` calls are identity conversions there). Nothing
here is an improvement; it is what the seed does, step by step, so that the graph can be
timed against it. Which seed line each step follows:

read        ``process_bigquery_in_chunks``: ``get_table_row_count`` (``SELECT COUNT(*)``), then
            ``num_chunks = (total_rows + chunk_size - 1) // chunk_size`` queries built by
            ``optimize_bigquery_query``: ``/*+ OPTIMIZE_FOR_LARGE_TABLES */ SELECT * FROM t
            LIMIT {chunk_size} OFFSET {i * chunk_size}`` (no ORDER BY; no OFFSET clause for the
            first chunk, ``if offset:``), ``gc.collect()`` after every chunk, then
            ``pd.concat(results, ignore_index=True)``: the whole table in one DataFrame.
types       ``_detect_column_types(df.dtypes)``: numeric first (pandas counts ``bool`` as
            numeric, so ``maintenance`` lands there), datetime, then struct when the source type
            name contains ``STRUCT`` (the seed tests ``"STRUCT" in str(col_type).upper()``; here
            the DuckDB column type, since pandas only sees ``object``). Strings arrive as
            ``object`` (not bigframes' ``StringDtype``), so no string column is detected as
            categorical: the categoricals are the ``force_categorical_columns`` the seed's
            example passes (``--categorical``, default the demo's ``site status``);
            ``sensor_id`` is therefore neither a feature nor encoded.
split       the seed's original ``_split_data`` (before its "purification"): ``np.random.seed(42)``
            (in ``__init__``), one ``np.random.rand(len(df))`` draw per row, train ``< 0.8``,
            validation ``< 0.9``, test otherwise: a fresh random draw, rows of one sensor in
            every split, windows that mix splits.
prepare     ``_prepare_dataframe`` per split, in the seed's order: drop ``drop_columns`` (none);
            ``_flatten_struct`` (``json.dumps`` / ``json.loads`` per row, ``json_normalize``,
            ``add_prefix``, then ``pd.concat([df.drop(columns=[col]), struct_df], axis=1)``: the
            normalised frame has a fresh RangeIndex while the split keeps the table's index, so
            the concat is an outer join on misaligned indexes, a seed bug kept here on purpose:
            the split gains rows that are all NaN but ``meta_*`` and keeps rows whose ``meta_*``
            are NaN; ``maintenance`` becomes ``object`` and drops out of the features);
            ``pd.to_datetime``; ``pd.get_dummies(df, columns=categorical_cols)`` with the names
            sanitised by ``[^0-9a-zA-Z_] -> _``, validation/test reindexed to the train dummies;
            ``_create_datetime_features`` with pandas ``.dt`` and the seed's periods
            ``hour / 23``, ``dayofweek / 6``, ``(day - 1) / 30``, ``(month - 1) / 11`` (hour 23
            lands on hour 0: ``sin(2*pi) = 0``); features = every numeric column but the
            target; ``SimpleImputer(strategy="median")`` then ``StandardScaler`` fitted on the
            train split and applied to every split, columns written back one by one.
strides     the example's ``data_generator(train_df, batch_size=10000)`` yielding
            ``df.iloc[i:i+batch_size][train_features].values``, into
            ``process_large_dataset``: the state buffer is prepended, then replaced by the last
            ``max(strides) * window_size`` rows of the *extended* batch (so windows near a batch
            boundary are emitted again and the stride phase shifts); ``process_batch`` builds the
            windows with a Python loop ``for i in range(0, n - window_size + 1, stride)``,
            ``np.array(windows)``; ``_apply_incremental_pca``: the first batch fixes
            ``n_components = min(pca_components, n_windows - 1, window_size * F)``, then
            ``IncrementalPCA.partial_fit`` and ``transform`` on every batch (early batches are
            projected with an immature model); ``gc.collect()`` after every batch; the per-batch
            projections are ``vstack``-ed per stride at the end.

One deliberate difference: the seed calls ``partial_fit`` on every batch, which raises when a
batch (the last, short one) has fewer windows than components; here such a batch is skipped,
as ``benchmarks.bench_core``'s seed method does, so small tables run at all.

``benchmarks.bench_core`` times the same windows + IncrementalPCA core on synthetic arrays;
this module reuses its batch boundaries (``row_chunks``, ``SEED_BATCH_ROWS``) and its peak-RSS
reading (``peak_rss_bytes``), and adds what the seed does around that core.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchmarks.bench_core import SEED_BATCH_ROWS, peak_rss_bytes, row_chunks

if TYPE_CHECKING:  # for annotations only: Preparer.prepare imports them where it uses them
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

CHUNK_SIZE = 100_000  # TerabyteFeatureExtractor(chunk_size=100000)
SPLIT_SEED = 42  # initialize_random_seed(42) / np.random.seed(42)
DEMO_CATEGORICALS = ("site", "status")
DEMO_TARGET = "load_next_hour"


# reading: process_bigquery_in_chunks + optimize_bigquery_query
def chunk_query(table: str, limit: int, offset: int) -> str:
    """The seed's ``optimize_bigquery_query``: hint comment, ``LIMIT`` then ``OFFSET`` (omitted when 0), no ORDER BY."""
    query = f'SELECT * FROM "{table}"'
    query = f"/*+ OPTIMIZE_FOR_LARGE_TABLES */ {query}"
    if limit:
        query += f" LIMIT {limit}"
    if offset:
        query += f" OFFSET {offset}"
    return query


def read_table_in_chunks(database: str, table: str, chunk_size: int = CHUNK_SIZE) -> tuple[pd.DataFrame, dict]:
    """``process_bigquery_in_chunks`` without a processing function: every chunk, then ``pd.concat``."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")  # BigQuery returns TIMESTAMP in UTC
        count = connection.execute(f'SELECT COUNT(*) as row_count FROM "{table}"').fetchone()
        assert count is not None  # COUNT(*) always returns one row
        total_rows = count[0]
        types = {name: str(kind) for name, kind, *_ in connection.execute(f'DESCRIBE "{table}"').fetchall()}
        num_chunks = (total_rows + chunk_size - 1) // chunk_size
        results = []
        for i in range(num_chunks):
            results.append(connection.execute(chunk_query(table, chunk_size, i * chunk_size)).df())
            gc.collect()
    return pd.concat(results, ignore_index=True), types


# column types: _detect_column_types
# Complexity: the seed script's own type rules, one branch per dtype (kept as the seed wrote them).
def detect_column_types(frame: pd.DataFrame, source_types: dict[str, str], force_categorical=()) -> dict[str, list]:  # noqa: C901
    numeric, datetime, categorical, struct, boolean = [], [], [], [], []
    for name, dtype in frame.dtypes.items():
        if pd.api.types.is_numeric_dtype(dtype):
            numeric.append(name)
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            datetime.append(name)
        elif isinstance(dtype, pd.BooleanDtype):
            boolean.append(name)
        elif isinstance(dtype, pd.StringDtype):
            categorical.append(name)
        elif "STRUCT" in source_types.get(name, str(dtype)).upper():
            struct.append(name)
    for name in force_categorical:  # prepare_data: force_categorical_columns win
        if name in frame.columns and name not in categorical:
            categorical.append(name)
            for group in (numeric, datetime, boolean):
                if name in group:
                    group.remove(name)
    return dict(numeric=numeric, datetime=datetime, categorical=categorical, struct=struct, boolean=boolean)


# split: the original _split_data
def split_data(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    frame["__split_rand"] = np.random.rand(len(frame))
    train = frame[frame["__split_rand"] < 0.8].drop(columns=["__split_rand"])
    validation = frame[(frame["__split_rand"] >= 0.8) & (frame["__split_rand"] < 0.9)].drop(columns=["__split_rand"])
    test = frame[frame["__split_rand"] >= 0.9].drop(columns=["__split_rand"])
    return train, validation, test


# _flatten_struct
def flatten_struct(frame: pd.DataFrame, column: str, align_index: bool = False) -> pd.DataFrame:
    """The seed's flattening; ``align_index=True`` gives the normalised columns the frame's index (the fix)."""
    if not isinstance(frame[column].iloc[0], dict):
        frame[column] = frame[column].apply(lambda x: {} if pd.isna(x) else x)
    json_strings = frame[column].apply(lambda x: json.dumps(x) if isinstance(x, dict) else "{}")
    parsed = json_strings.apply(json.loads)
    struct_frame = pd.json_normalize(parsed).add_prefix(f"{column}_")
    if align_index:
        struct_frame.index = frame.index
    return pd.concat([frame.drop(columns=[column]), struct_frame], axis=1)


# _create_datetime_features
def create_datetime_features(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The seed's cyclical features: periods 23 hours, 6 weekdays, 30 days, 11 months (sic)."""
    if column not in frame.columns:
        return frame
    if not pd.api.types.is_datetime64_any_dtype(frame[column]):
        frame[column] = pd.to_datetime(frame[column])
    hours = frame[column].dt.hour / 23.0
    days_of_week = frame[column].dt.dayofweek / 6.0
    days_of_month = (frame[column].dt.day - 1) / 30.0
    months = (frame[column].dt.month - 1) / 11.0
    for name, values in (("hour", hours), ("dayofweek", days_of_week), ("day", days_of_month), ("month", months)):
        frame[f"{column}_sin_{name}"] = np.sin(2 * np.pi * values)
        frame[f"{column}_cos_{name}"] = np.cos(2 * np.pi * values)
    return frame


@dataclass
class Preparer:
    """``_prepare_dataframe``'s state: the fitted imputer, scaler and dummy columns (from the train split)."""

    types: dict
    target_column: str | None
    drop_columns: tuple = ()
    align_struct_index: bool = False
    imputer: SimpleImputer | None = None
    scaler: StandardScaler | None = None
    fixed_dummy_columns: list | None = None

    # Complexity: the seed script's per-column pass, kept as written: it is the baseline measured.
    def prepare(self, df_split: pd.DataFrame, is_train: bool) -> tuple[pd.DataFrame, list[str]]:  # noqa: C901
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import StandardScaler

        to_drop = [c for c in self.drop_columns if c in df_split.columns]
        if to_drop:
            df_split = df_split.drop(columns=to_drop)
        for column in self.types["struct"]:
            if column in df_split.columns:
                df_split = flatten_struct(df_split, column, self.align_struct_index)
        for column in self.types["datetime"]:
            if column in df_split.columns:
                df_split[column] = pd.to_datetime(df_split[column])
        target = self.target_column
        if target is None:  # the seed's heuristic: the last numeric column
            eligible = [
                c for c in self.types["numeric"] if c in df_split.columns and c not in self.types["categorical"]
            ]
            target = eligible[-1]
        if self.types["categorical"]:
            dummies = pd.get_dummies(df_split, columns=self.types["categorical"], drop_first=False)
            dummies.columns = dummies.columns.str.replace(r"[^0-9a-zA-Z_]", "_", regex=True)
            if is_train:
                self.fixed_dummy_columns = list(dummies.columns)
            elif self.fixed_dummy_columns is not None:
                for column in self.fixed_dummy_columns:
                    if column not in dummies.columns:
                        dummies[column] = 0
                dummies = dummies[self.fixed_dummy_columns]
            df_split = dummies
        for column in self.types["datetime"]:
            if column in df_split.columns:
                df_split = create_datetime_features(df_split, column)
        numeric = [c for c in df_split.columns if pd.api.types.is_numeric_dtype(df_split[c].dtype)]
        features = [c for c in numeric if c != target]
        if is_train:
            self.imputer = SimpleImputer(strategy="median")
            self.imputer.fit(df_split[features])
            self.scaler = StandardScaler()
            imputed = self.imputer.transform(df_split[features])
            self.scaler.fit(imputed)
        else:
            assert self.imputer is not None and self.scaler is not None, "prepare the train split first"
            imputed = self.imputer.transform(df_split[features])
        scaled = pd.DataFrame(self.scaler.transform(imputed), index=df_split.index, columns=features)
        for column in features:
            df_split[column] = scaled[column]
        gc.collect()
        return df_split, features


class StrideProcessor:
    """``TerabyteTemporalStrideProcessor`` with ``use_incremental_pca=True`` and ``maintain_state=True``."""

    def __init__(
        self,
        window_size: int = 5,
        stride_perspectives=(1, 3, 5),
        pca_components: int = 32,
        batch_size: int = SEED_BATCH_ROWS,
    ):
        self.window_size = window_size
        self.stride_perspectives = list(stride_perspectives)
        self.pca_components = pca_components
        self.batch_size = batch_size
        self.pca_models: dict = {}
        self.state_buffer: np.ndarray | None = None
        self.windows_made = {s: 0 for s in self.stride_perspectives}
        self.skipped_batches = {s: 0 for s in self.stride_perspectives}

    def process_large_dataset(self, data_generator) -> dict[int, np.ndarray]:
        results: dict[int, list[np.ndarray]] = {stride: [] for stride in self.stride_perspectives}
        for batch_data in data_generator:
            batch = np.asarray(batch_data)
            if self.state_buffer is not None:
                batch = np.vstack([np.asarray(self.state_buffer), batch])
            buffer_size = max(self.stride_perspectives) * self.window_size
            self.state_buffer = batch[-buffer_size:].copy()
            for stride, data in self.process_batch(batch).items():
                results[stride].append(data)
            gc.collect()
        return {s: np.vstack(parts) for s, parts in results.items() if parts}

    def process_batch(self, data: np.ndarray) -> dict[int, np.ndarray]:
        results = {}
        for stride in self.stride_perspectives:
            windows = self._create_strided_sequences(data, stride)
            if not windows:
                continue
            self.windows_made[stride] += len(windows)
            projected = self._apply_incremental_pca(np.array(windows), stride)
            if projected is not None:
                results[stride] = projected
        return results

    def _create_strided_sequences(self, data: np.ndarray, stride: int) -> list:
        data_np = np.asarray(data)
        num_samples = len(data_np)
        windows: list[np.ndarray] = []
        if num_samples < self.window_size:
            return windows
        for i in range(0, num_samples - self.window_size + 1, stride):
            windows.append(data_np[i : i + self.window_size])
        return windows

    def _apply_incremental_pca(self, window_batch: np.ndarray, stride: int):
        from sklearn.decomposition import IncrementalPCA

        batch_size, _, _ = window_batch.shape
        flat_windows = window_batch.reshape(batch_size, -1)
        if stride not in self.pca_models:
            n_components = min(self.pca_components, batch_size - 1, flat_windows.shape[1])
            self.pca_models[stride] = IncrementalPCA(n_components=n_components, batch_size=self.batch_size)
        model = self.pca_models[stride]
        if batch_size < model.n_components:  # the seed raises here (see the module docstring)
            self.skipped_batches[stride] += 1
            return None
        model.partial_fit(flat_windows)
        return model.transform(flat_windows)


def data_generator(frame: pd.DataFrame, features: list[str], batch_size: int = SEED_BATCH_ROWS):
    """The seed's example generator: ``df.iloc[i:i+batch_size][train_features].values``."""
    for start, stop in row_chunks(len(frame), batch_size):
        yield frame.iloc[start:stop][features].values


@dataclass
class SeedResult:
    seconds: float
    rows: int
    peak_rss_bytes: int
    split_rows: dict
    prepared_rows: dict
    features: list
    windows: dict
    projected_shapes: dict
    skipped_batches: dict
    seconds_by_step: dict
    models: dict = field(repr=False, default_factory=dict)
    frames: dict | None = field(repr=False, default=None)

    def summary(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("models", "frames")}
        out["components"] = {s: int(m.n_components_) for s, m in self.models.items()}
        out["explained_variance"] = {
            s: round(float(np.sum(m.explained_variance_ratio_)), 6) for s, m in self.models.items()
        }
        return out


def run_seed(
    database: str,
    table: str = "sensor_readings",
    *,
    chunk_size: int = CHUNK_SIZE,
    batch_size: int = SEED_BATCH_ROWS,
    window_size: int = 5,
    strides=(1, 3, 5),
    components: int = 32,
    target_column: str | None = DEMO_TARGET,
    categorical=DEMO_CATEGORICALS,
    drop_columns=(),
    align_struct_index: bool = False,
    keep_frames: bool = False,
) -> SeedResult:
    """The whole seed pipeline on ``table``; ``keep_frames`` returns the prepared splits too (tests)."""
    import duckdb  # noqa: F401  (imports outside the timer, as the graph's in-run figure excludes them)
    import sklearn.decomposition  # noqa: F401
    import sklearn.impute  # noqa: F401
    import sklearn.preprocessing  # noqa: F401

    started = time.perf_counter()
    steps = {}
    np.random.seed(SPLIT_SEED)  # TerabyteFeatureExtractor.__init__
    frame, source_types = read_table_in_chunks(database, table, chunk_size)
    rows = len(frame)
    steps["read"] = time.perf_counter() - started
    types = detect_column_types(frame, source_types, categorical)
    train, validation, test = split_data(frame)
    del frame
    split_rows = {"train": len(train), "validation": len(validation), "test": len(test)}
    mark = time.perf_counter()
    preparer = Preparer(types, target_column, tuple(drop_columns), align_struct_index)
    train, features = preparer.prepare(train, is_train=True)
    validation, _ = preparer.prepare(validation, is_train=False)
    test, _ = preparer.prepare(test, is_train=False)
    prepared_rows = {"train": len(train), "validation": len(validation), "test": len(test)}
    gc.collect()
    steps["prepare"] = time.perf_counter() - mark
    mark = time.perf_counter()
    processor = StrideProcessor(window_size, strides, components, batch_size)
    projected = processor.process_large_dataset(data_generator(train, features, batch_size))
    steps["strides"] = time.perf_counter() - mark
    return SeedResult(
        seconds=time.perf_counter() - started,
        rows=rows,
        peak_rss_bytes=peak_rss_bytes(),
        split_rows=split_rows,
        prepared_rows=prepared_rows,
        features=features,
        windows=dict(processor.windows_made),
        projected_shapes={s: list(p.shape) for s, p in projected.items()},
        skipped_batches=dict(processor.skipped_batches),
        seconds_by_step={k: round(v, 3) for k, v in steps.items()},
        models=processor.pca_models,
        frames={"train": train, "validation": validation, "test": test} if keep_frames else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_seed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="DuckDB file holding the table")
    parser.add_argument("--table", default="sensor_readings")
    parser.add_argument(
        "--chunk-size", type=int, default=CHUNK_SIZE, help="rows per LIMIT/OFFSET query (seed: 100,000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=SEED_BATCH_ROWS, help="rows per processor batch (seed: 10,000)"
    )
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument("--target", default=DEMO_TARGET, help="target column, kept out of the features")
    parser.add_argument("--categorical", nargs="*", default=list(DEMO_CATEGORICALS), help="force_categorical_columns")
    parser.add_argument(
        "--align-struct-index",
        action="store_true",
        help="fix the seed's misaligned struct concat (default: keep the seed's bug)",
    )
    parser.add_argument("--json", default=None, help="also write the result as JSON to this path")
    args = parser.parse_args(argv)
    for name in ("chunk_size", "batch_size", "window", "components"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.strides) < 1:
        parser.error("--strides must all be >= 1")
    result = run_seed(
        args.database,
        args.table,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        window_size=args.window,
        strides=args.strides,
        components=args.components,
        target_column=args.target or None,
        categorical=args.categorical,
        align_struct_index=args.align_struct_index,
    )
    summary = result.summary()
    print(
        f"seed: {result.rows:,} rows in {result.seconds:.2f} s ({result.rows / result.seconds:,.0f} rows/s), "
        f"peak RSS {result.peak_rss_bytes / 2**20:.0f} MiB"
    )
    print(
        f"  steps (s): {summary['seconds_by_step']}; splits {result.split_rows}; after prepare {result.prepared_rows}"
    )
    print(
        f"  {len(result.features)} features; windows per stride {result.windows}; projected {result.projected_shapes}; "
        f"components {summary['components']}; explained variance {summary['explained_variance']}"
    )
    if any(result.skipped_batches.values()):
        print(f"  batches skipped (fewer windows than components; the seed would raise): {result.skipped_batches}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
