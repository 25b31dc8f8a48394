"""What each asset stores, and how to read it back chunk by chunk (no dagster import).

Each row-wise asset stores only the columns it adds, one Parquet file per partition, row-aligned:

    raw_chunk/date=K/part-0.parquet           the source columns
    split_data/date=K/part-0.parquet          split
    cyclical_features/date=K/part-0.parquet   {column}_sin_hour ... {column}_cos_month
    preprocess_stats/K.json                   statistics of day K's train rows (PreprocessStats.to_dict)
    preprocessor/preprocessor.json            the fitted preprocessor (FittedPreprocessor.to_dict; not partitioned)
    features/date=K/part-0.parquet            entity, timestamp, split, target, then the feature columns
    stride_windows/layout.json                window size, strides, feature and key columns, dtype, max_gap (every
                                              stride_windows run rewrites it)
    stride_windows/stride=S/date=K/part-0.parquet   per window: row (of features K it ends on), entity, end_time, split
    window_tails/K.arrow                      day K alone: each entity's row count in K and its last window_size - 1
                                              feature rows (times, splits) in K (Arrow IPC, zstd, in entity key order)
    window_carry/K.arrow                      each entity's row count and last window_size - 1 feature rows after K:
                                              window_carry of K - 1 folded with window_tails of K (same format;
                                              streamed, never whole in memory)
    pca_stats/date=K/part-0.parquet           per stride one row: stride, n_samples, n_features, mean, scatter_upper
    pca_models/stride=S.npz                   the stride's fitted PCAModel (PCAModel.to_arrays; not partitioned)
    projected_windows/stride=S/date=K/part-0.parquet  entity, end_time, split, pc_1 .. pc_k

so ``split_data`` reads as raw_chunk's columns plus ``split``, and ``cyclical_features`` as both plus
its own (``iter_asset_frames``). Windows are never stored expanded: ``load_stride_windows`` rebuilds
them from ``features`` and the previous partition's carry with the rule of ``emberharmony_core.windowing``.
Only ``window_carry`` goes from day to day (``emberharmony_core.carry_fold``): every pass over a day's rows
needs that day's files, the global fits and the carry of the day before. Each file is written and read by the
functions here (``save_*`` / ``load_*`` / ``*_keys``), never by spelling its path elsewhere.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .features.pca import PCAModel, PCAStats
from .features.preprocess import FittedPreprocessor, PreprocessStats
from .names import (  # the asset names, re-exported: what each stores is this module's
    CYCLICAL,
    DEFAULT_ROWS_PER_CHUNK,
    EXPORT_FEATURES,
    EXPORT_PROJECTED,
    FEATURES,
    PCA_MODELS,
    PCA_STATS,
    PREPROCESS_STATS,
    PREPROCESSOR,
    PROJECTED,
    RAW,
    SPLIT,
    STRIDE_WINDOWS,
    WINDOW_CARRY,
    WINDOW_TAILS,
)
from .ops import get_backend
from .store import ArtifactReadError, ArtifactStore, frame_from_arrow, repair_command
from .windowing import WindowCarry, Windower, chunk_rows, gather_windows, window_index

# every asset's name (its key, and its folder in the store)
INDEX_DELTA = ("row", "end_time")  # a window index's columns stored delta-encoded (increasing within an entity)
FRAME_PARTS = {RAW: (RAW,), SPLIT: (RAW, SPLIT), CYCLICAL: (RAW, SPLIT, CYCLICAL)}
WINDOWS_LAYOUT = "layout"  # stride_windows/layout.json: window size, strides, feature and key columns
OLD_CARRY = (STRIDE_WINDOWS, "carry")  # where builds before window_carry kept the carry


def stride_folder(stride: int) -> str:
    return f"stride={int(stride)}"


def iter_asset_frames(
    store: ArtifactStore, asset: str, key: str, rows: int = DEFAULT_ROWS_PER_CHUNK
) -> Iterator[pd.DataFrame]:
    """The asset's rows for partition ``key`` as it defines them (``split_data`` = raw_chunk's columns + split,
    ...), as frames of at most ``rows`` rows; the row-aligned files are zipped without loading them whole."""
    parts = FRAME_PARTS.get(asset, (asset,))
    counts = {part: store.frame_rows(part, key) for part in parts}
    if len(set(counts.values())) > 1:
        raise ArtifactReadError(
            f"partition {key}: {', '.join(f'{p} has {n} rows' for p, n in counts.items())}; they must "
            f"match (asset {asset}, partition {key}): re-materialise {', '.join(parts[1:])} for "
            f"partition {key}: {repair_command(','.join(parts[1:]), key, store.base)}",
            asset=asset,
            partition=key,
        )
    if not any(counts.values()):  # an empty partition: one empty frame with every column
        yield pd.concat([store.read_frame(part, key) for part in parts], axis=1)
        return
    streams = [store.iter_batches(part, key, rows=rows) for part in parts]
    pending: list[pa.RecordBatch | None] = [None] * len(streams)
    while True:
        ready: list[pa.RecordBatch] = []
        for stream, batch in zip(streams, pending, strict=True):
            while batch is None or batch.num_rows == 0:
                batch = next(stream, None)
                if batch is None:
                    return
            ready.append(batch)
        n = min(batch.num_rows for batch in ready)
        names, columns = [], []
        for batch in ready:
            head = batch.slice(0, n)
            names.extend(head.schema.names)
            columns.extend(head.columns)
        yield frame_from_arrow(pa.Table.from_arrays(columns, names=names))
        pending = [batch.slice(n) for batch in ready]


def asset_schema(store: ArtifactStore, asset: str, key: str) -> pa.Schema:
    """The Arrow schema of the asset's rows for partition ``key`` (its row-aligned files' columns together)."""
    return pa.unify_schemas([store.frame_schema(part, key) for part in FRAME_PARTS.get(asset, (asset,))])


def feature_batches(store: ArtifactStore, key: str, rows: int = DEFAULT_ROWS_PER_CHUNK) -> Iterator[pa.RecordBatch]:
    """Partition ``key``'s ``features`` as Arrow batches of at most ``rows`` rows; an empty day gives one empty
    batch with its columns, so the files made from it are written, with their types."""
    empty = True
    for batch in store.iter_batches(FEATURES, key, rows=rows):
        empty = False
        yield batch
    if empty:
        yield pa.RecordBatch.from_pylist([], schema=store.frame_schema(FEATURES, key))


def read_asset_frame(store: ArtifactStore, asset: str, key: str) -> pd.DataFrame:
    """The whole partition of a row-wise asset as one frame (tests, small partitions)."""
    return pd.concat(list(iter_asset_frames(store, asset, key, rows=1 << 30)), ignore_index=True)


# the window carry: state of every entity's series after a partition, in entity key order
_CARRY_BATCH_BYTES = 8 * 2**20  # a stored carry batch: a few MiB (a chunk's entities come a few at a time)


class StoredCarry:
    """Partition ``key``'s stored window carry (``asset``: ``window_carry``, or ``window_tails``, same format) as a
    ``Windower`` source: ``batches()`` reads it a batch at a time (the file is opened once: every pass over it
    reads the same version, even if a run rewrites it meanwhile)."""

    def __init__(self, store: ArtifactStore, key: str, asset: str = WINDOW_CARRY):
        self.store, self.key = store, key
        self._parts = (asset, key)
        self._reader = store.open_record_batches(*self._parts)
        meta = {k.decode(): v.decode() for k, v in (self._reader.schema.metadata or {}).items()}
        try:
            self.window_size, self.n_features = int(meta["window_size"]), int(meta["n_features"])
            self.dtype = np.dtype(meta.get("dtype", "float32"))
        except (KeyError, ValueError, TypeError) as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: BaseException):
        return self.store._unreadable(self.store.path(*self._parts, suffix=".arrow"), self._parts, exc)

    def batches(self) -> Iterator[WindowCarry]:
        for i in range(self._reader.num_record_batches):
            batch = self.store.record_batch(self._reader, i, *self._parts)
            try:
                yield WindowCarry.from_arrow(batch)
            except (KeyError, ValueError, TypeError, pa.ArrowException) as exc:
                raise self._unreadable(exc) from None

    def load(self) -> WindowCarry:
        """The whole carry in memory (tests, small series)."""
        return WindowCarry.concat(list(self.batches()), self.window_size, self.n_features)


class CarryWriter:
    """``Windower(sink=writer)``: partition ``key``'s new carry (of ``asset``), written as it comes (batches of a
    few MiB); the file replaces the old one when the block ends without an error, else nothing is kept."""

    def __init__(
        self,
        store: ArtifactStore,
        key: str,
        window_size: int,
        n_features: int,
        dtype="float32",
        asset: str = WINDOW_CARRY,
    ):
        self.store, self.key, self.asset = store, key, asset
        self.entities = 0  # written so far
        self._empty = WindowCarry(window_size, n_features, dtype)
        self._files, self._writer, self._bytes = ExitStack(), None, 0
        self._held: list[WindowCarry] = []

    def __enter__(self) -> CarryWriter:
        return self

    def __call__(self, carry: WindowCarry) -> None:
        self._held.append(carry)
        self.entities += len(carry)
        self._bytes += carry.rows.nbytes + 40 * len(carry)
        if self._bytes >= _CARRY_BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._held:
            return
        first = self._held[0]
        batch = WindowCarry.concat(self._held, first.window_size, first.n_features, first.dtype).to_arrow()
        self._held, self._bytes = [], 0
        self._open(batch.schema).write_batch(batch)

    def _open(self, schema: pa.Schema):
        if self._writer is None:
            self._writer = self._files.enter_context(self.store.batch_writer(schema, self.asset, self.key))
        return self._writer

    def __exit__(self, kind, value, traceback) -> bool | None:
        if kind is None:
            try:
                self._flush()
                self._open(self._empty.arrow_schema())  # an empty carry is a carry too (no entity yet)
            except BaseException:
                self._files.__exit__(*sys.exc_info())  # the temporary file goes
                raise
        return self._files.__exit__(kind, value, traceback)


def has_carry(store: ArtifactStore, key: str, asset: str = WINDOW_CARRY) -> bool:
    return store.exists(asset, key, suffix=".arrow")


def carry_digest(store: ArtifactStore, key: str, asset: str = WINDOW_CARRY) -> str:
    """BLAKE2b hex digest of partition ``key``'s stored carry file: equal files, equal digests."""
    digest = hashlib.blake2b(digest_size=16)
    with store.path(asset, key, suffix=".arrow").open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_carry(store: ArtifactStore, key: str, carry: WindowCarry, asset: str = WINDOW_CARRY) -> None:
    """Store a whole in-memory carry as partition ``key``'s (tests; the assets stream it with ``CarryWriter``)."""
    with CarryWriter(store, key, carry.window_size, carry.n_features, carry.dtype, asset) as writer:
        writer(carry)


def load_carry(store: ArtifactStore, key: str, asset: str = WINDOW_CARRY) -> WindowCarry:
    return StoredCarry(store, key, asset).load()


# per-partition PCA statistics: one Parquet file per partition, one row per stride, zstd-compressed (its entries
# are sums of float32 products, which compress; sizes: docs/benchmarks.md, where the time goes)
def save_pca_stats(store: ArtifactStore, key: str, stats: Mapping[int, PCAStats]) -> None:
    """Store partition ``key``'s ``PCAStats`` per stride (``{stride: stats}``), atomically, in one file."""
    rows = [(int(stride), one.to_arrays()) for stride, one in sorted(stats.items())]

    def lists(name: str) -> pa.ListArray:  # one float64 list per stride, from the arrays without a Python float each
        values = [arrays[name].ravel() for _, arrays in rows]
        offsets = np.cumsum([0, *(v.size for v in values)]).astype(np.int32)
        flat = np.concatenate(values) if values else np.zeros(0)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float64()))

    table = pa.table(
        {
            "stride": pa.array([stride for stride, _ in rows], pa.int64()),
            **{
                name: pa.array([int(arrays[name]) for _, arrays in rows], pa.int64())
                for name in ("n_samples", "n_features")
            },
            "mean": lists("mean"),
            "scatter_upper": lists("scatter_upper"),
        }
    )
    with store.frame_writer(PCA_STATS, key) as writer:
        writer.write(table)


def load_pca_stats(store: ArtifactStore, key: str) -> dict:
    """Partition ``key``'s stored ``PCAStats`` per stride: ``{stride: stats}``."""
    table = store.read_table(PCA_STATS, key)
    try:
        out = {}
        for i, stride in enumerate(table.column("stride").to_pylist()):
            row = {name: table.column(name)[i] for name in ("n_samples", "n_features", "mean", "scatter_upper")}
            out[int(stride)] = PCAStats.from_arrays(
                {
                    name: (np.asarray(value.values) if isinstance(value, pa.ListScalar) else np.asarray(value.as_py()))
                    for name, value in row.items()
                }
            )
        return out
    except (KeyError, IndexError, ValueError, TypeError, pa.ArrowException) as exc:
        raise store._unreadable(store.frame_path(PCA_STATS, key), (PCA_STATS, f"date={key}"), exc) from None


def pca_stats_keys(store: ArtifactStore) -> list[str]:
    """Partition keys with stored statistics, sorted."""
    return store.frame_keys(PCA_STATS)


def old_pca_stats_exist(store: ArtifactStore, strides) -> bool:
    """Whether ``pca_stats/stride=S/K.npz`` files of an older layout (no longer read) are stored for a stride."""
    return any(store.list_names(PCA_STATS, stride_folder(s), suffix=".npz") for s in strides)


def old_carry_exists(store: ArtifactStore, key: str) -> bool:
    """Whether partition ``key``'s carry is where builds before ``window_carry`` kept it (``OLD_CARRY``)."""
    return any(store.exists(*OLD_CARRY, key, suffix=suffix) for suffix in (".arrow", ".npz"))


# the preprocessing fits: a day's train statistics, and the preprocessor fitted on all of them (JSON, no pickle)
def save_preprocess_stats(store: ArtifactStore, key: str, stats: PreprocessStats) -> None:
    store.write_json(stats.to_dict(), PREPROCESS_STATS, key)


def load_preprocess_stats(store: ArtifactStore, key: str) -> PreprocessStats:
    return store.read_json(PREPROCESS_STATS, key, parse=PreprocessStats.from_dict)


def preprocess_stats_keys(store: ArtifactStore) -> list[str]:
    """Partition keys with stored ``preprocess_stats``, sorted."""
    return store.list_names(PREPROCESS_STATS, suffix=".json")


def save_preprocessor(store: ArtifactStore, fitted: FittedPreprocessor) -> None:
    store.write_json(fitted.to_dict(), PREPROCESSOR, PREPROCESSOR)


def load_preprocessor(store: ArtifactStore) -> FittedPreprocessor:
    return store.read_json(PREPROCESSOR, PREPROCESSOR, parse=FittedPreprocessor.from_dict)


# the PCA fits: one .npz per stride
def save_pca_model(store: ArtifactStore, stride: int, model: PCAModel) -> None:
    store.write_arrays(model.to_arrays(), PCA_MODELS, stride_folder(stride))


def load_pca_model(store: ArtifactStore, stride: int) -> PCAModel:
    return PCAModel.from_arrays(store.read_arrays(PCA_MODELS, stride_folder(stride)))


# the windows' layout: what every stride_windows run was made with (one file, rewritten by each run)
def save_windows_layout(store: ArtifactStore, layout: dict) -> None:
    store.write_json(layout, STRIDE_WINDOWS, WINDOWS_LAYOUT)


def load_windows_layout(store: ArtifactStore, key: str | None = None) -> dict:
    """``stride_windows/layout.json``; ``key``: the partition a read error's repair command names."""
    return store.read_json(STRIDE_WINDOWS, WINDOWS_LAYOUT, partition=key)


def load_stride_windows(
    store: ArtifactStore, key: str, stride: int, previous_key: str | None = None, backend=None
) -> tuple[np.ndarray, pd.DataFrame]:
    """The stride's windows ending in partition ``key``: ``(windows, index)``.

    ``windows`` (m, window_size * F) NumPy (or ``backend``) array, each row the window's feature rows
    concatenated in time order; ``index`` its stored index (row, entity, end_time, split) in the same order.
    Rebuilt from ``features`` (chunk by chunk) and the carry of ``previous_key`` (default: the latest
    stored carry before ``key``; none for the first partition), so only the index is on disk.

        windows, index = load_stride_windows(ArtifactStore("data/artifacts"), "2026-01-05", 3)
    """
    backend = backend or get_backend("numpy")
    # written by every stride_windows run: re-materialising this partition rewrites it (the read error says so)
    layout = load_windows_layout(store, key)
    if previous_key is None:
        earlier = [k for k in carry_keys(store) if k < key]
        previous_key = earlier[-1] if earlier else None
    carry = StoredCarry(store, previous_key) if previous_key is not None else None
    windower = Windower(
        layout["window_size"],
        [stride],
        carry,
        n_features=len(layout["feature_columns"]),
        dtype=layout["dtype"],
        max_gap=layout.get("max_gap"),
        sink=False,
    )
    blocks: list[Any] = []  # backend arrays (NumPy, torch or MLX)
    indexes: list[pd.DataFrame] = []
    offset = 0
    entity = layout["entity_column"] or "entity"
    for batch in store.iter_batches(FEATURES, key):
        rows = chunk_rows(
            batch, layout["feature_columns"], layout["entity_column"], layout["timestamp_column"], layout["dtype"]
        )
        made = windower.add(rows, backend)
        blocks.extend(gather_windows(backend, made.rows, made.starts[stride], made.window_size))
        indexes.append(window_index(made, stride, rows, offset, entity).to_pandas())
        offset += len(rows)
    width = layout["window_size"] * len(layout["feature_columns"])
    windows = backend.concat(blocks, axis=0) if blocks else backend.zeros((0, width), layout["dtype"])
    index = (
        pd.concat(indexes, ignore_index=True) if indexes else pd.DataFrame(columns=["row", entity, "end_time", "split"])
    )
    # the windows are rebuilt, not stored: they must be the ones the stored index names (a missing or foreign
    # carry of the day before would silently give other windows)
    stored = store.read_table(STRIDE_WINDOWS, key, stride_folder(stride), columns=["row"]).column("row").to_numpy()
    if len(stored) != len(index) or not np.array_equal(stored, index["row"].to_numpy(np.int64)):
        why = (
            "no window carry is stored before it"
            if previous_key is None
            else f"the carry of {previous_key} is not the one they were made from"
        )
        raise ArtifactReadError(
            f"the stride-{stride} windows rebuilt for partition {key} ({len(index):,}) are not the ones its stored "
            f"index names ({len(stored):,}): {why}; re-materialise window_carry from the first partition "
            f"through the day before (one run), then stride_windows for {key}: "
            f"{repair_command(STRIDE_WINDOWS, key, store.base)}",
            asset=STRIDE_WINDOWS,
            partition=key,
        )
    return windows, index


def carry_keys(store: ArtifactStore, asset: str = WINDOW_CARRY) -> list[str]:
    return store.list_names(asset, suffix=".arrow")


__all__ = [
    "RAW",
    "SPLIT",
    "CYCLICAL",
    "FEATURES",
    "STRIDE_WINDOWS",
    "PROJECTED",
    "FRAME_PARTS",
    "stride_folder",
    "iter_asset_frames",
    "asset_schema",
    "feature_batches",
    "read_asset_frame",
    "StoredCarry",
    "CarryWriter",
    "save_carry",
    "has_carry",
    "load_carry",
    "carry_keys",
    "load_stride_windows",
    "PCA_STATS",
    "PCA_MODELS",
    "PREPROCESS_STATS",
    "PREPROCESSOR",
    "EXPORT_FEATURES",
    "EXPORT_PROJECTED",
    "WINDOW_TAILS",
    "WINDOW_CARRY",
    "carry_digest",
    "INDEX_DELTA",
    "save_pca_stats",
    "load_pca_stats",
    "pca_stats_keys",
    "old_pca_stats_exist",
    "old_carry_exists",
    "save_preprocess_stats",
    "load_preprocess_stats",
    "preprocess_stats_keys",
    "save_preprocessor",
    "load_preprocessor",
    "save_pca_model",
    "load_pca_model",
    "save_windows_layout",
    "load_windows_layout",
]
