"""Artifact storage: Parquet frames, ``.npz`` arrays, Arrow IPC record batches and JSON documents under one base path.

Partitioned frames live in Hive-style folders, ``<base>/<asset>[/<sub>]/date=<key>/part-0.parquet``
(readable as one dataset by DuckDB ``read_parquet('.../**/*.parquet', hive_partitioning=true)``,
``pyarrow.dataset`` or a BigQuery external table), written chunk by chunk as Parquet row groups
(``frame_writer``) and read back chunk by chunk (``iter_frames``), so no partition is ever whole in memory.

Every write is atomic (a temporary file beside the target, then a rename), so a
crashed run never leaves a half-written artifact, and rewriting a partition
replaces it whole (idempotent re-runs). Nothing is pickled: ``.npz`` files are read
with ``allow_pickle=False``. The base may be a local folder or any fsspec URL
(``gs://bucket/prefix``) through ``universal_pathlib``.

A read that fails (missing, empty, truncated or corrupt file) raises :class:`ArtifactReadError`
(:class:`ArtifactMissingError` for a missing file, also a ``FileNotFoundError``) naming the file, the
asset and partition it belongs to, and the command that re-materialises it.

Locks (local folders only; on fsspec URLs they are no-ops: object stores have no ``flock``, and
concurrent writers there must be kept apart by the orchestrator):

- ``<base>/.writers.lock``: every run that writes holds it SHARED (``writers_lock()``; the Dagster
  store resource takes it for the whole run), so any number of runs can write at once (different
  partitions are different files; writes of one file serialise, below), while ``wipe()`` takes it
  EXCLUSIVE without waiting and fails at once with "another run is writing here (pid ...)". Each
  holder leaves a small note (pid, run, since) in ``<base>/.writers/`` for that message; the note
  goes when the lock is released, and notes of dead processes are ignored.
- ``<base>/.locks/<path>.lock``: each file write (``frame_writer``, ``write_arrays``, ``write_json``)
  holds an exclusive lock on its target from the temporary file's creation to the rename, so two
  writers of one partition file serialise (each writes a whole file; the later rename wins) and
  writers of different files never wait for each other (its cost: docs/benchmarks.md).

A writer waiting for another writer of the same file polls for up to ``lock_timeout`` (default an hour),
then fails naming the file, so even a lock-order deadlock cannot hang a run for ever. Pids in messages
are those of this machine (the notes of holders elsewhere, on a shared folder, show as not alive).

Lock files are empty, start with ".", and are never listed as artifacts (``list_names``,
``frame_keys``); ``pyarrow.dataset`` and DuckDB globs of ``*.parquet`` skip them too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from .names import DEFAULT_ROWS_PER_CHUNK

if sys.platform == "win32":  # pragma: no cover (POSIX only; on Windows locks are no-ops)
    fcntl = None
else:
    import fcntl

_SAFE_PART = re.compile(r"^[A-Za-z0-9_.=\-]+$")
PARTITION_FOLDER = "date={}"
PART_FILE = "part-0"
WRITERS_LOCK = ".writers.lock"  # shared by writing runs, exclusive for wipe()
WRITERS_NOTES = ".writers"  # one note per holder of the writers lock: pid, run, since
TARGET_LOCKS = ".locks"  # one empty lock file per artifact path ever written
#: The command that re-materialises one asset (and partition) of the Dagster graph.
REPAIR_COMMAND = "dagster asset materialize -m emberharmony_assets.definitions --select {asset}"


def _struct_as_arrow(arrow_type: pa.DataType):
    return pd.ArrowDtype(arrow_type) if pa.types.is_struct(arrow_type) else None


ARROW_MEMORY_POOLS = ("system", "mimalloc", "jemalloc")


def check_arrow_memory_pool(name: str | None, setting: str = "arrow_memory_pool") -> None:
    """A ValueError naming ``setting`` unless ``name`` is None or one of ``ARROW_MEMORY_POOLS``."""
    if name is not None and name not in ARROW_MEMORY_POOLS:
        raise ValueError(f"{setting} must be one of {', '.join(ARROW_MEMORY_POOLS)} (or unset), got {name!r}")


def use_arrow_memory_pool(name: str | None, setting: str = "arrow_memory_pool") -> str:
    """Make ``name`` (system | mimalloc | jemalloc) Arrow's default memory pool for this process; None: the
    system allocator unless ``$ARROW_DEFAULT_MEMORY_POOL`` chose one. Returns the pool in use.

    Why system: chunk buffers are large and short-lived; glibc returns them to the OS when freed (mmap),
    while Arrow's bundled mimalloc keeps them: a lower peak RSS at the same speed, most of it when set from the
    process start (figures: docs/benchmarks.md)."""
    if name is None:
        if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
            return pa.default_memory_pool().backend_name
        name = "system"
    check_arrow_memory_pool(name, setting)
    try:
        pool = getattr(pa, f"{name}_memory_pool")()
    except NotImplementedError as exc:  # this pyarrow build lacks that allocator
        raise ValueError(f"{setting} {name!r} is not available in this pyarrow build ({exc}); use 'system'") from None
    pa.set_memory_pool(pool)
    return pool.backend_name


# Arrow's thread pool pays off from about this many rows; below it (a small partition) handing the columns
# to the pool costs more than it saves (figures: docs/benchmarks.md).
THREADED_ROWS = 50_000


def frame_from_arrow(table: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """``table.to_pandas()``, but STRUCT columns stay Arrow-backed (``pd.ArrowDtype``) instead of a Python
    dict per row: ~4x faster to convert, to write back and to flatten."""
    return table.to_pandas(types_mapper=_struct_as_arrow, use_threads=table.num_rows >= THREADED_ROWS)


class ArtifactReadError(RuntimeError):
    """A stored artifact cannot be read (missing, empty, truncated, wrong format): the message names the file,
    its asset and partition, and the command that re-materialises it (``asset``, ``partition``, ``path`` too)."""

    def __init__(self, message: str, *, path=None, asset: str | None = None, partition: str | None = None):
        super().__init__(message)
        self.path, self.asset, self.partition = path, asset, partition


class ArtifactMissingError(ArtifactReadError, FileNotFoundError):
    """A stored artifact does not exist (an ``ArtifactReadError`` and a ``FileNotFoundError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreBusyError(RuntimeError):
    """The store's lock is held by another run: the message names its pid(s)."""


def artifact_owner(parts) -> tuple[str, str | None]:
    """``(asset, partition key or None)`` of the artifact at ``parts`` (``ArtifactStore.path``'s parts):
    ``("stride_windows", "stride=3", "date=2026-01-05", "part-0")`` and ``("stride_windows", "carry",
    "2026-01-05")`` are both stride_windows' partition 2026-01-05; ``("pca_models", "stride=3")`` has none."""
    parts = [str(p) for p in parts]
    keys = [p.removeprefix("date=") for p in parts[1:] if p.startswith("date=")] or [
        p for p in parts[1:] if p[:2].isdigit()
    ]
    return parts[0], (keys[-1] if keys else None)


def _default_base() -> str:
    return os.path.join(os.environ.get("EMBERHARMONY_HOME", "data"), "artifacts")


def repair_command(asset: str, partition: str | None = None, base=None, last: str | None = None) -> str:
    """The command that re-materialises ``asset`` (for ``partition``, or the range ``partition`` .. ``last`` in one
    run) into the store at ``base``: ``dagster asset materialize`` (docs/ui.md), with ``EMBERHARMONY_HOME=<folder>``
    in front when the store is ``<folder>/artifacts`` but not the default one, or the store's ``base_path`` as run
    config otherwise."""
    command = REPAIR_COMMAND.format(asset=asset)
    if partition and last and last != partition:
        command += f" --partition-range {partition}...{last}"
    elif partition:
        command += f" --partition {partition}"
    if base is None:
        return command
    base = UPath(base)
    local = base.protocol in ("", "file", "local")
    if local and os.path.abspath(base.path) == os.path.abspath(_default_base()):
        return command
    if local and base.name == "artifacts":
        return f"EMBERHARMONY_HOME={os.path.abspath(base.parent.path)} {command}"
    config = json.dumps({"resources": {"store": {"config": {"base_path": str(base)}}}})
    return f"{command} --config-json '{config}'"


def repair_hint(parts, base=None) -> str:
    """``re-materialise <asset> for partition <key>: <command>`` for the artifact at ``parts``."""
    asset, key = artifact_owner(parts)
    return (
        f"re-materialise {asset}" + (f" for partition {key}" if key else "") + f": {repair_command(asset, key, base)}"
    )


def _what_is_wrong(target: UPath, exc: BaseException) -> str:
    try:
        size = target.stat().st_size
    except Exception:  # noqa: BLE001 - only for the wording
        size = None
    state = (
        "it is empty (0 bytes)" if size == 0 else "it is truncated or corrupt" + (f" ({size:,} bytes)" if size else "")
    )
    return f"{state}: {type(exc).__name__}: {str(exc).rstrip('. ')}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class WritersLock:
    """A held lock on ``<base>/.writers.lock`` (shared for writers, exclusive for a wipe); ``release()``
    (or the end of a ``with`` block) frees it and removes its note. A no-op on non-local stores."""

    def __init__(self, fd: int | None = None, note: str | None = None):
        self._fd, self._note = fd, note

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, note, self._fd, self._note = self._fd, self._note, None, None
        if note is not None:
            with contextlib.suppress(OSError):
                os.unlink(note)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> WritersLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a lock that was never released (a crashed caller) goes with its object
        with contextlib.suppress(Exception):
            self.release()


class ArtifactStore:
    """Artifacts addressed as ``<base>/<asset>/<partition or name>.<ext>``.

    ``lock_timeout``: how long (seconds) a write waits for another writer of the SAME file before
    failing with :class:`StoreBusyError` naming it (None: wait for ever).
    """

    def __init__(self, base_path: str | os.PathLike, lock_timeout: float | None = 3600.0):
        self.base = UPath(base_path)
        self.lock_timeout = lock_timeout
        self.local = self.base.protocol in ("", "file", "local")
        self._locking = self.local and fcntl is not None
        self._base_path = self.base.path.rstrip("/") if self.local else None

    @property
    def _local_base(self) -> str:
        """The base folder of a local store (the only kind with locks and writers' notes)."""
        assert self._base_path is not None  # set for every local store
        return self._base_path

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.base)!r})"

    def path(self, *parts: str, suffix: str) -> UPath:
        for part in parts:
            if not _SAFE_PART.match(str(part)) or part in (".", ".."):
                raise ValueError(f"artifact path part {part!r} may hold only letters, digits and _ . = -")
        return self.base.joinpath(*parts[:-1], f"{parts[-1]}{suffix}")

    # ------------------------------------------------------------------ locks (local folders only)
    def _flock(self, fd: int, operation: int, timeout: float | None) -> bool:
        """``flock(fd, operation)``: at once if free, else polled until ``timeout`` (0: never wait); False if not
        got."""
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while deadline is None or time.monotonic() < deadline:  # polled, not blocking: a deadlock cannot hang for ever
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                continue
        return False

    @staticmethod
    def _open_lock(path: str) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _note(self, owner: str, mode: str) -> str | None:
        """A note for :meth:`writers`: ``<base>/.writers/<pid>-<id>`` holding pid, owner, mode and since."""
        folder = os.path.join(self._local_base, WRITERS_NOTES)
        path = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        document = {"pid": os.getpid(), "owner": owner, "mode": mode, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.makedirs(folder, exist_ok=True)
            with open(path, "w") as out:
                json.dump(document, out)
        except OSError:  # the note only words messages; the lock is what counts
            return None
        return path

    def writers(self) -> list[dict]:
        """The live holders of the writers lock as their notes say (pid, owner, mode, since), oldest first."""
        if not self._locking:
            return []
        folder = os.path.join(self._local_base, WRITERS_NOTES)
        found = []
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        for name in names:
            try:
                with open(os.path.join(folder, name)) as handle:
                    note = json.load(handle)
                if _pid_alive(int(note["pid"])):
                    found.append(note)
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda n: (n.get("since", ""), n["pid"]))

    def _holders_text(self) -> str:
        notes = self.writers()
        if not notes:
            return "pid not recorded"
        return ", ".join(
            f"pid {n['pid']}"
            + (f", {n['owner']}" if n.get("owner") else "")
            + (f", since {n['since']}" if n.get("since") else "")
            for n in notes
        )

    def _shown(self, target=None) -> str:
        target = self.base if target is None else target
        return os.path.abspath(target.path) if self.local else str(target)

    def writers_lock(self, owner: str = "", timeout: float | None = 60.0) -> WritersLock:
        """Hold the store's writers lock SHARED (any number of writers at once; a :meth:`wipe` cannot start
        while it is held) until ``release()`` / the end of a ``with`` block. Waits up to ``timeout`` seconds
        for a wipe in progress. ``owner`` (e.g. "run 1a2b3c4d") words the messages that name this writer.
        A no-op on non-local stores."""
        if not self._locking:
            return WritersLock()
        os.makedirs(self._local_base, exist_ok=True)
        fd = self._open_lock(os.path.join(self._local_base, WRITERS_LOCK))
        if not self._flock(fd, fcntl.LOCK_SH, timeout):
            holders = self._holders_text()
            os.close(fd)
            raise StoreBusyError(
                f"artifact store {self._shown()} is being wiped ({holders}) and was still locked after "
                f"{timeout} s: run again when the wipe is done"
            )
        return WritersLock(fd, self._note(owner, "shared"))

    def wipe(self) -> None:
        """Delete every artifact (the lock file stays). Takes the writers lock EXCLUSIVE without waiting: while
        any run holds it (``writers_lock()``), nothing is deleted and :class:`StoreBusyError` says "another run
        is writing here (pid ...)". Non-local stores: removed without a lock."""
        if not self.local:
            if self.base.exists():
                self.base.fs.rm(self.base.path, recursive=True)
            return
        if not os.path.isdir(self._local_base):
            return
        fd = self._open_lock(os.path.join(self._local_base, WRITERS_LOCK)) if self._locking else None
        try:
            if fd is not None and not self._flock(fd, fcntl.LOCK_EX, 0):
                raise StoreBusyError(
                    f"another run is writing here ({self._holders_text()}): {self._shown()} was not "
                    "wiped. Wait for that run to finish (or stop it), then run again"
                )
            for entry in os.scandir(self._local_base):
                if entry.name == WRITERS_LOCK:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        finally:
            if fd is not None:
                os.close(fd)

    def _target_lock_path(self, target: UPath) -> str:
        path, base = target.path, self._local_base
        relative = path[len(base) + 1 :] if path.startswith(base + "/") else os.path.relpath(path, base)
        return os.path.join(base, TARGET_LOCKS, relative.replace("/", "~") + ".lock")

    @contextmanager
    def _target_lock(self, target: UPath):
        """Exclusive lock of one artifact file while it is written and renamed (no-op on non-local stores)."""
        if not self._locking:
            yield
            return
        lock = self._target_lock_path(target)
        fd = self._open_lock(lock)
        try:
            if not self._flock(fd, fcntl.LOCK_EX, self.lock_timeout):
                raise StoreBusyError(
                    f"{self._shown(target)} has been being written by another writer for more than "
                    f"{self.lock_timeout} s (lock {lock}; runs writing here: {self._holders_text()})"
                )
            yield
        finally:
            os.close(fd)

    # raw bytes, atomically
    def _write_bytes(self, target: UPath, payload: bytes) -> UPath:
        with self._atomic(target) as temporary:
            temporary.write_bytes(payload)
        return target

    @contextmanager
    def _atomic(self, target: UPath):
        """A temporary path beside ``target``, written under the target's lock: renamed over ``target`` when the
        block ends without an error, else removed."""
        with self._target_lock(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                yield temporary
                self._replace(temporary, target)
            except BaseException:
                if temporary.exists():
                    temporary.unlink()
                raise

    @staticmethod
    def _replace(temporary: UPath, target: UPath) -> None:
        if target.protocol in ("", "file", "local"):
            os.replace(temporary.path, target.path)
        else:
            target.fs.mv(temporary.path, target.path)

    def exists(self, *parts: str, suffix: str) -> bool:
        return self.path(*parts, suffix=suffix).exists()

    # ------------------------------------------------------------------ read errors
    def _missing(self, target: UPath, parts, partition: str | None = None) -> ArtifactMissingError:
        asset, key = artifact_owner(parts)
        key = partition or key
        where = f"asset {asset}" + (f", partition {key}" if key else "")
        return ArtifactMissingError(
            f"artifact {self._shown(target)} ({where}) does not exist: materialise {asset}"
            + (f" for partition {key}" if key else "")
            + f" first: {repair_command(asset, key, self.base)}",
            path=target,
            asset=asset,
            partition=key,
        )

    def _unreadable(self, target: UPath, parts, exc: BaseException, partition: str | None = None) -> ArtifactReadError:
        asset, key = artifact_owner(parts)
        key = partition or key
        where = f"asset {asset}" + (f", partition {key}" if key else "")
        hint = (
            f"re-materialise {asset}"
            + (f" for partition {key}" if key else "")
            + f": {repair_command(asset, key, self.base)}"
        )
        return ArtifactReadError(
            f"artifact {self._shown(target)} ({where}) cannot be read, {_what_is_wrong(target, exc)}; {hint}",
            path=target,
            asset=asset,
            partition=key,
        )

    # frames: one Parquet file per partition, Hive layout, written and read chunk by chunk
    def frame_path(self, asset: str, key: str, *sub: str) -> UPath:
        """``<base>/<asset>/<sub...>/date=<key>/part-0.parquet``."""
        return self.path(asset, *sub, PARTITION_FOLDER.format(key), PART_FILE, suffix=".parquet")

    def has_frame(self, asset: str, key: str, *sub: str) -> bool:
        return self.frame_path(asset, key, *sub).exists()

    @contextmanager
    def frame_writer(
        self,
        asset: str,
        key: str,
        *sub: str,
        schema: pa.Schema | None = None,
        delta: tuple[str, ...] = (),
        types: pa.Schema | None = None,
    ):
        """A ``FrameWriter`` appending row groups to ``asset``'s file for ``key``; the file replaces the old
        one only when the block ends without an error (temporary file, then rename), else it is removed.
        The file's lock is held for the whole block: another writer of the same file waits. ``delta``: integer
        or timestamp columns stored delta-encoded (row numbers, sorted times); ``types``: see ``FrameWriter``."""
        with self._atomic(self.frame_path(asset, key, *sub)) as temporary:
            writer = FrameWriter(temporary, schema, delta, types)
            try:
                yield writer
                writer.close()
            except BaseException:
                writer.abort()
                raise

    def write_frame(self, frame: pd.DataFrame, asset: str, key: str, *sub: str) -> UPath:
        with self.frame_writer(asset, key, *sub) as writer:
            writer.write(frame)
        return self.frame_path(asset, key, *sub)

    def _open_parquet(self, asset: str, key: str, *sub: str) -> tuple[UPath, pq.ParquetFile]:
        target = self.frame_path(asset, key, *sub)
        parts = (asset, *sub, PARTITION_FOLDER.format(key))
        if not target.exists():
            raise self._missing(target, parts)
        try:
            # pre_buffer=False: Arrow's default pre-buffering keeps every row group read so far (a reader's memory
            # grows with the file); without it a reader holds one row group
            source = target.open("rb") if target.protocol not in ("", "file", "local") else target.path
            return target, pq.ParquetFile(source, pre_buffer=False)
        except Exception as exc:
            raise self._unreadable(target, parts, exc) from None

    def frame_rows(self, asset: str, key: str, *sub: str) -> int:
        return self._open_parquet(asset, key, *sub)[1].metadata.num_rows

    def frame_schema(self, asset: str, key: str, *sub: str) -> pa.Schema:
        """The Arrow schema of the partition's file (from its footer)."""
        return self._open_parquet(asset, key, *sub)[1].schema_arrow

    def iter_batches(
        self, asset: str, key: str, *sub: str, columns: list[str] | None = None, rows: int = DEFAULT_ROWS_PER_CHUNK
    ) -> Iterator[pa.RecordBatch]:
        """The partition's rows as Arrow record batches of at most ``rows`` rows (only ``columns``)."""
        target, handle = self._open_parquet(asset, key, *sub)
        try:
            yield from handle.iter_batches(
                batch_size=rows, columns=columns, use_threads=handle.metadata.num_rows >= THREADED_ROWS
            )
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise self._unreadable(target, (asset, *sub, PARTITION_FOLDER.format(key)), exc) from None

    def iter_frames(
        self, asset: str, key: str, *sub: str, columns: list[str] | None = None, rows: int = DEFAULT_ROWS_PER_CHUNK
    ) -> Iterator[pd.DataFrame]:
        for batch in self.iter_batches(asset, key, *sub, columns=columns, rows=rows):
            yield frame_from_arrow(batch)

    def read_table(self, asset: str, key: str, *sub: str, columns: list[str] | None = None) -> pa.Table:
        """The whole partition as one Arrow table (small files: statistics, tests; assets stream with
        ``iter_batches``)."""
        target, handle = self._open_parquet(asset, key, *sub)
        try:
            return handle.read(columns=columns)
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise self._unreadable(target, (asset, *sub, PARTITION_FOLDER.format(key)), exc) from None

    def read_frame(self, asset: str, key: str, *sub: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The whole partition as one frame (for tests and small partitions; assets stream with ``iter_frames``)."""
        return frame_from_arrow(self.read_table(asset, key, *sub, columns=columns))

    def frame_keys(self, asset: str, *sub: str) -> list[str]:
        """Partition keys with a stored frame, sorted."""
        directory = self.base.joinpath(asset, *sub)
        if not directory.exists():
            return []
        return sorted(
            p.name.removeprefix("date=")
            for p in directory.iterdir()
            if p.name.startswith("date=") and p.joinpath(f"{PART_FILE}.parquet").exists()
        )

    # arrays
    def write_arrays(self, arrays: Mapping[str, np.ndarray], *parts: str) -> UPath:
        buffer = io.BytesIO()
        # numpy's stubs put allow_pickle: bool beside **kwds, so mypy matches a dict of arrays against it
        np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        return self._write_bytes(self.path(*parts, suffix=".npz"), buffer.getvalue())

    def read_arrays(self, *parts: str) -> dict[str, np.ndarray]:
        target = self.path(*parts, suffix=".npz")
        if not target.exists():
            raise self._missing(target, parts)
        try:
            with target.open("rb") as handle, np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except Exception as exc:
            raise self._unreadable(target, parts, exc) from None

    # record batches: an Arrow IPC file (zstd), written batch by batch and read back batch by batch
    @contextmanager
    def batch_writer(self, schema: pa.Schema, *parts: str):
        """A writer of ``schema``'s record batches into ``<parts>.arrow`` (Arrow IPC file, zstd level 1):
        ``writer.write_batch(batch)``; the file replaces the old one only when the block ends without an
        error (temporary file, then rename), else it is removed. For state kept in key order that is read
        back as a stream (the window carry): not Parquet, so ``*.parquet`` globs of an asset skip it."""
        options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))
        with (
            self._atomic(self.path(*parts, suffix=".arrow")) as temporary,
            temporary.open("wb") as handle,
            pa.ipc.new_file(handle, schema, options=options) as writer,
        ):
            yield writer

    def open_record_batches(self, *parts: str) -> pa.ipc.RecordBatchFileReader:
        """The file ``<parts>.arrow`` opened once (its ``schema``, ``num_record_batches``; read each batch with
        ``record_batch``): readers of one opened file see one version of it, whatever is renamed over it since."""
        target = self.path(*parts, suffix=".arrow")
        if not target.exists():
            raise self._missing(target, parts)
        try:
            source = pa.OSFile(target.path) if self.local else target.open("rb")  # read, not mapped: RSS stays a batch
            return pa.ipc.open_file(source)
        except Exception as exc:
            raise self._unreadable(target, parts, exc) from None

    def record_batch(self, reader: pa.ipc.RecordBatchFileReader, i: int, *parts: str) -> pa.RecordBatch:
        """Batch ``i`` of ``reader`` (``open_record_batches(*parts)``); a damaged batch names the file."""
        try:
            return reader.get_batch(i)
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise self._unreadable(self.path(*parts, suffix=".arrow"), parts, exc) from None

    # documents
    def write_json(self, document, *parts: str) -> UPath:
        payload = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return self._write_bytes(self.path(*parts, suffix=".json"), payload.encode())

    def read_json(self, *parts: str, partition: str | None = None, parse=None):
        """The JSON document at ``parts`` (``parse(document)`` when given: a document it refuses, such as valid JSON
        in another format, is a read error too); ``partition``: the partition a read error's repair command names
        when the file is not one partition's own (``stride_windows/layout.json``, rewritten by every partition's
        run)."""
        target = self.path(*parts, suffix=".json")
        if not target.exists():
            raise self._missing(target, parts, partition)
        try:
            document = json.loads(target.read_text())
            return document if parse is None else parse(document)
        except Exception as exc:
            raise self._unreadable(target, parts, exc, partition) from None

    def list_names(self, *folder: str, suffix: str) -> list[str]:
        """Names (without suffix) of the artifacts in ``<base>/<folder...>``, sorted (lock and temporary
        files, whose names start with ".", are not artifacts)."""
        directory = self.base.joinpath(*folder)
        if not directory.exists():
            return []
        return sorted(
            p.name[: -len(suffix)]
            for p in directory.iterdir()
            if p.name.endswith(suffix) and not p.name.startswith(".")
        )


# One thread compresses and writes every FrameWriter's row groups (pyarrow releases the GIL there), so a
# chunk's Parquet encoding overlaps the next chunk's compute; each writer has at most one row group in
# flight, so memory stays one chunk per open file. Made per process (a forked child has no threads).
_write_thread: tuple[int, ThreadPoolExecutor] | None = None


def _write_executor() -> ThreadPoolExecutor:
    global _write_thread
    if _write_thread is None or _write_thread[0] != os.getpid():
        _write_thread = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="emberharmony-parquet"))
    return _write_thread[1]


def typed_columns(table: pa.Table, types: pa.Schema | None) -> pa.Table:
    """``table`` with its ``null``-typed columns (pandas' object columns of no value) cast to their type in
    ``types``, for the columns it names."""
    if types is None:
        return table
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type) and field.name in types.names:
            typed = types.field(field.name).type
            table = table.set_column(i, pa.field(field.name, typed), table.column(i).cast(typed))
    return table


class FrameWriter:
    """Appends frames (or Arrow tables) to one Parquet file as row groups; the schema is the first chunk's
    (or the one given), and later chunks are cast to it. Floats use byte-stream-split; pages are zstd level 1
    (about the size of level 3, faster; LZ4_RAW would be faster still, but BigQuery's list of Parquet codecs does
    not name it, and external tables over these files must work). List columns
    (statistics) are plain, ``delta`` columns (integers, timestamps) DELTA_BINARY_PACKED: a window index's
    row numbers take about a bit each instead of a dictionary entry. Row groups are encoded on a background
    thread, one in flight per file; an error there is raised by the next call.

    ``types``: the Arrow types of columns pandas cannot type by their values (an object column of an empty
    chunk, or one that is all NULL, converts to Arrow's ``null`` type): such a column is cast to its type
    here, so an empty partition's file has the real schema and a later chunk's values fit it."""

    def __init__(
        self,
        target: UPath,
        schema: pa.Schema | None = None,
        delta: tuple[str, ...] = (),
        types: pa.Schema | None = None,
    ):
        self.target, self.schema, self.rows = target, schema, 0
        self._writer: pq.ParquetWriter | None = None
        self._handle: BinaryIO | None = None
        self.delta, self.types = tuple(delta), types
        self._pending: Future | None = None

    def write(self, frame: pd.DataFrame | pa.Table) -> None:
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        table = typed_columns(table, self.types)
        if self.schema is None:
            self.schema = table.schema.remove_metadata()
        elif not table.schema.remove_metadata().equals(self.schema):
            try:
                table = table.select(self.schema.names).cast(self.schema)
            except (KeyError, pa.ArrowException) as exc:
                raise ValueError(
                    f"{self.target.name}: a chunk's columns {table.schema.names} / types do not match the "
                    f"first chunk's {self.schema} ({exc})"
                ) from None
        if self._writer is None:
            self._open()
        writer = self._writer
        assert writer is not None  # _open sets it
        if table.num_rows:
            self._wait()
            self._pending = _write_executor().submit(writer.write_table, table)
            self.rows += table.num_rows

    def _wait(self) -> None:
        """Wait for the row group in flight; its error, if any, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _open(self) -> None:
        schema = self.schema
        assert schema is not None  # write sets it from the first chunk; close refuses to open without one
        floats = [f.name for f in schema if pa.types.is_floating(f.type)]
        plain = {f.name for f in schema if pa.types.is_list(f.type)} | set(self.delta) | set(floats)
        local = self.target.protocol in ("", "file", "local")
        self._handle = None if local else self.target.open("wb")
        self._writer = pq.ParquetWriter(
            self.target.path if local else self._handle,
            schema.remove_metadata(),
            compression="zstd",
            compression_level=1,
            use_byte_stream_split=floats or False,
            use_dictionary=[f.name for f in schema if f.name not in plain],
            column_encoding={name: "DELTA_BINARY_PACKED" for name in self.delta} or None,
        )

    def close(self) -> None:
        if self._writer is None:
            if self.schema is None:
                raise ValueError(f"{self.target.name}: nothing was written and no schema was given")
            self._open()
        writer = self._writer
        assert writer is not None  # _open sets it
        self._wait()
        writer.close()
        if self._handle is not None:
            self._handle.close()

    def abort(self) -> None:
        try:
            if self._pending is not None:
                self._pending.exception()  # let the row group in flight finish; its error does not matter now
            if self._writer is not None:
                self._writer.close()
            if self._handle is not None:
                self._handle.close()
        except Exception:
            pass
