"""Artifact storage: Parquet frames, ``.npz`` arrays and JSON documents under one base path.

Partitioned frames live in Hive-style folders, ``<base>/<asset>[/<sub>]/date=<key>/part-0.parquet``
(readable as one dataset by DuckDB ``read_parquet('.../**/*.parquet', hive_partitioning=true)``,
``pyarrow.dataset`` or a BigQuery external table), written chunk by chunk as Parquet row groups
(``frame_writer``) and read back chunk by chunk (``iter_frames``), so no partition is ever whole in memory.

Every write is atomic (a temporary file beside the target, then a rename), so a
crashed run never leaves a half-written artifact, and rewriting a partition
replaces it whole (idempotent re-runs). Nothing is pickled: ``.npz`` files are read
with ``allow_pickle=False``. The base may be a local folder or any fsspec URL
(``gs://bucket/prefix``) through ``universal_pathlib``.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

_SAFE_PART = re.compile(r"^[A-Za-z0-9_.=\-]+$")
PARTITION_FOLDER = "date={}"
PART_FILE = "part-0"


def _struct_as_arrow(arrow_type: pa.DataType):
    return pd.ArrowDtype(arrow_type) if pa.types.is_struct(arrow_type) else None


def frame_from_arrow(table: "pa.Table | pa.RecordBatch") -> pd.DataFrame:
    """``table.to_pandas()``, but STRUCT columns stay Arrow-backed (``pd.ArrowDtype``) instead of a Python
    dict per row: ~4x faster to convert, to write back and to flatten."""
    return table.to_pandas(types_mapper=_struct_as_arrow)


class ArtifactReadError(RuntimeError):
    """A stored artifact cannot be read (corrupt, truncated, wrong format): the message names the file and what to re-run."""


def _repair_hint(parts) -> str:
    asset = parts[0]
    keys = [p.removeprefix("date=") for p in parts[1:] if str(p).startswith("date=")] or [p for p in parts[1:] if p[:2].isdigit()]
    return f"re-materialise {asset!r}" + (f" for partition {keys[-1]}" if keys else "")


class ArtifactStore:
    """Artifacts addressed as ``<base>/<asset>/<partition or name>.<ext>``."""

    def __init__(self, base_path: str | os.PathLike):
        self.base = UPath(base_path)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.base)!r})"

    def path(self, *parts: str, suffix: str) -> UPath:
        for part in parts:
            if not _SAFE_PART.match(str(part)) or part in (".", ".."):
                raise ValueError(f"artifact path part {part!r} may hold only letters, digits and _ . = -")
        return self.base.joinpath(*parts[:-1], f"{parts[-1]}{suffix}")

    # raw bytes, atomically
    def _write_bytes(self, target: UPath, payload: bytes) -> UPath:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(payload)
        self._replace(temporary, target)
        return target

    @staticmethod
    def _replace(temporary: UPath, target: UPath) -> None:
        if target.protocol in ("", "file", "local"):
            os.replace(temporary.path, target.path)
        else:
            target.fs.mv(temporary.path, target.path)

    def exists(self, *parts: str, suffix: str) -> bool:
        return self.path(*parts, suffix=suffix).exists()

    # frames: one Parquet file per partition, Hive layout, written and read chunk by chunk
    def frame_path(self, asset: str, key: str, *sub: str) -> UPath:
        """``<base>/<asset>/<sub...>/date=<key>/part-0.parquet``."""
        return self.path(asset, *sub, PARTITION_FOLDER.format(key), PART_FILE, suffix=".parquet")

    def has_frame(self, asset: str, key: str, *sub: str) -> bool:
        return self.frame_path(asset, key, *sub).exists()

    @contextmanager
    def frame_writer(self, asset: str, key: str, *sub: str, schema: pa.Schema | None = None):
        """A ``FrameWriter`` appending row groups to ``asset``'s file for ``key``; the file replaces the old
        one only when the block ends without an error (temporary file, then rename), else it is removed."""
        target = self.frame_path(asset, key, *sub)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        writer = FrameWriter(temporary, schema)
        try:
            yield writer
            writer.close()
            self._replace(temporary, target)
        except BaseException:
            writer.abort()
            if temporary.exists():
                temporary.unlink()
            raise

    def write_frame(self, frame: pd.DataFrame, asset: str, key: str, *sub: str) -> UPath:
        with self.frame_writer(asset, key, *sub) as writer:
            writer.write(frame)
        return self.frame_path(asset, key, *sub)

    def _open_parquet(self, asset: str, key: str, *sub: str) -> tuple[UPath, pq.ParquetFile]:
        target = self.frame_path(asset, key, *sub)
        if not target.exists():
            raise FileNotFoundError(f"artifact {target} does not exist: materialise {asset!r} for partition {key} first")
        try:
            return target, pq.ParquetFile(target.open("rb") if target.protocol not in ("", "file", "local") else target.path)
        except Exception as exc:
            raise ArtifactReadError(f"artifact {target} cannot be read ({type(exc).__name__}: {exc}); "
                                    f"{_repair_hint((asset, *sub, PARTITION_FOLDER.format(key)))}") from None

    def frame_rows(self, asset: str, key: str, *sub: str) -> int:
        return self._open_parquet(asset, key, *sub)[1].metadata.num_rows

    def iter_batches(self, asset: str, key: str, *sub: str, columns: list[str] | None = None,
                     rows: int = 200_000) -> Iterator[pa.RecordBatch]:
        """The partition's rows as Arrow record batches of at most ``rows`` rows (only ``columns``)."""
        target, handle = self._open_parquet(asset, key, *sub)
        try:
            yield from handle.iter_batches(batch_size=rows, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise ArtifactReadError(f"artifact {target} cannot be read ({type(exc).__name__}: {exc}); "
                                    f"{_repair_hint((asset, *sub, PARTITION_FOLDER.format(key)))}") from None

    def iter_frames(self, asset: str, key: str, *sub: str, columns: list[str] | None = None,
                    rows: int = 200_000) -> Iterator[pd.DataFrame]:
        for batch in self.iter_batches(asset, key, *sub, columns=columns, rows=rows):
            yield frame_from_arrow(batch)

    def read_frame(self, asset: str, key: str, *sub: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The whole partition as one frame (for tests and small partitions; assets stream with ``iter_frames``)."""
        target, handle = self._open_parquet(asset, key, *sub)
        try:
            return frame_from_arrow(handle.read(columns=columns))
        except (OSError, pa.ArrowException) as exc:
            raise ArtifactReadError(f"artifact {target} cannot be read ({type(exc).__name__}: {exc}); "
                                    f"{_repair_hint((asset, *sub, PARTITION_FOLDER.format(key)))}") from None

    def frame_keys(self, asset: str, *sub: str) -> list[str]:
        """Partition keys with a stored frame, sorted."""
        directory = self.base.joinpath(asset, *sub)
        if not directory.exists():
            return []
        return sorted(p.name.removeprefix("date=") for p in directory.iterdir()
                      if p.name.startswith("date=") and p.joinpath(f"{PART_FILE}.parquet").exists())

    # arrays
    def write_arrays(self, arrays: Mapping[str, np.ndarray], *parts: str) -> UPath:
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        return self._write_bytes(self.path(*parts, suffix=".npz"), buffer.getvalue())

    def read_arrays(self, *parts: str) -> dict[str, np.ndarray]:
        target = self.path(*parts, suffix=".npz")
        if not target.exists():
            raise FileNotFoundError(f"artifact {target} does not exist: materialise {parts[0]!r} for {parts[1:]} first")
        try:
            with target.open("rb") as handle, np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except Exception as exc:
            raise ArtifactReadError(f"artifact {target} cannot be read ({type(exc).__name__}: {exc}); "
                                    f"{_repair_hint(parts)}") from None

    # documents
    def write_json(self, document, *parts: str) -> UPath:
        payload = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return self._write_bytes(self.path(*parts, suffix=".json"), payload.encode())

    def read_json(self, *parts: str):
        target = self.path(*parts, suffix=".json")
        if not target.exists():
            raise FileNotFoundError(f"artifact {target} does not exist: materialise {parts[0]!r} first")
        try:
            return json.loads(target.read_text())
        except Exception as exc:
            raise ArtifactReadError(f"artifact {target} cannot be read ({type(exc).__name__}: {exc}); "
                                    f"{_repair_hint(parts)}") from None

    def list_names(self, *folder: str, suffix: str) -> list[str]:
        """Names (without suffix) of the artifacts in ``<base>/<folder...>``, sorted."""
        directory = self.base.joinpath(*folder)
        if not directory.exists():
            return []
        return sorted(p.name[: -len(suffix)] for p in directory.iterdir()
                      if p.name.endswith(suffix) and not p.name.startswith("."))


class FrameWriter:
    """Appends frames (or Arrow tables) to one Parquet file as row groups; the schema is the first chunk's
    (or the one given), and later chunks are cast to it. Floats use byte-stream-split; pages are LZ4_RAW
    compressed (measured: about half zstd's time per file for 3-7% more bytes)."""

    def __init__(self, target: UPath, schema: pa.Schema | None = None):
        self.target, self.schema, self.rows, self._writer, self._handle = target, schema, 0, None, None

    def write(self, frame: "pd.DataFrame | pa.Table") -> None:
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        if self.schema is None:
            self.schema = table.schema.remove_metadata()
        elif not table.schema.remove_metadata().equals(self.schema):
            try:
                table = table.select(self.schema.names).cast(self.schema)
            except (KeyError, pa.ArrowException) as exc:
                raise ValueError(f"{self.target.name}: a chunk's columns {table.schema.names} / types do not match the "
                                 f"first chunk's {self.schema} ({exc})") from None
        if self._writer is None:
            self._open()
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def _open(self) -> None:
        floats = [f.name for f in self.schema if pa.types.is_floating(f.type)]
        local = self.target.protocol in ("", "file", "local")
        self._handle = None if local else self.target.open("wb")
        self._writer = pq.ParquetWriter(self.target.path if local else self._handle, self.schema.remove_metadata(),
                                        compression="lz4", use_byte_stream_split=floats or False,
                                        use_dictionary=[f.name for f in self.schema if f.name not in floats])

    def close(self) -> None:
        if self._writer is None:
            if self.schema is None:
                raise ValueError(f"{self.target.name}: nothing was written and no schema was given")
            self._open()
        self._writer.close()
        if self._handle is not None:
            self._handle.close()

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._handle is not None:
                self._handle.close()
        except Exception:
            pass
