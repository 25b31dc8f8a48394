"""Artifact storage: Parquet frames, ``.npz`` arrays and JSON documents under one base path.

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
from typing import Mapping

import numpy as np
import pandas as pd
from upath import UPath

_SAFE_PART = re.compile(r"^[A-Za-z0-9_.=\-]+$")


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
        if target.protocol in ("", "file", "local"):
            os.replace(temporary.path, target.path)
        else:
            target.fs.mv(temporary.path, target.path)
        return target

    def exists(self, *parts: str, suffix: str) -> bool:
        return self.path(*parts, suffix=suffix).exists()

    # frames
    def write_frame(self, frame: pd.DataFrame, *parts: str) -> UPath:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return self._write_bytes(self.path(*parts, suffix=".parquet"), buffer.getvalue())

    def read_frame(self, *parts: str, columns: list[str] | None = None) -> pd.DataFrame:
        target = self.path(*parts, suffix=".parquet")
        if not target.exists():
            raise FileNotFoundError(f"artifact {target} does not exist: materialise {parts[0]!r} for {parts[1:]} first")
        with target.open("rb") as handle:
            return pd.read_parquet(handle, columns=columns)

    # arrays
    def write_arrays(self, arrays: Mapping[str, np.ndarray], *parts: str) -> UPath:
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        return self._write_bytes(self.path(*parts, suffix=".npz"), buffer.getvalue())

    def read_arrays(self, *parts: str) -> dict[str, np.ndarray]:
        target = self.path(*parts, suffix=".npz")
        if not target.exists():
            raise FileNotFoundError(f"artifact {target} does not exist: materialise {parts[0]!r} for {parts[1:]} first")
        with target.open("rb") as handle, np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    # documents
    def write_json(self, document, *parts: str) -> UPath:
        payload = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return self._write_bytes(self.path(*parts, suffix=".json"), payload.encode())

    def read_json(self, *parts: str):
        target = self.path(*parts, suffix=".json")
        if not target.exists():
            raise FileNotFoundError(f"artifact {target} does not exist: materialise {parts[0]!r} first")
        return json.loads(target.read_text())

    def list_names(self, *folder: str, suffix: str) -> list[str]:
        """Names (without suffix) of the artifacts in ``<base>/<folder...>``, sorted."""
        directory = self.base.joinpath(*folder)
        if not directory.exists():
            return []
        return sorted(p.name[: -len(suffix)] for p in directory.iterdir()
                      if p.name.endswith(suffix) and not p.name.startswith("."))
