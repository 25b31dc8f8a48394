"""1 worker against N: one run over the range against the scale-out waves with N runs at once, same table.

    .venv/bin/python benchmarks/bench_scale_out.py --entities 32000 --days 4 --workers 2

Every run is held to one core (BLAS, Arrow and DuckDB threads 1), in both set-ups. 1 worker: the main job
(``python -m emberharmony_assets.main``: ``full_refresh_job`` over the range, one run). N workers: a
persistent instance with the QueuedRunCoordinator (at most N runs of a pass at once), ``dagster dev`` (its
daemon launches each run as a process) and ``emberharmony_assets.scale_out`` submitting the waves, N runs a wave.
Prints both wall times, their ratio, each wave's time, and checks that every artifact is byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_CORE = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "EMBERHARMONY_DUCKDB_THREADS": "1",
}  # Arrow's CPU pool follows OMP_NUM_THREADS


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=32000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default=None, help="folder for the data (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="scale_out_"))
    one, many = work / "one", work / "many"
    for home in (one, many):
        (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ONE_CORE, "EMBERHARMONY_BACKEND": "numpy"}
    demo = one / "demo.duckdb"
    if not demo.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "emberharmony_core.demo",
                "--database",
                str(demo),
                "--entities",
                str(args.entities),
                "--days",
                str(args.days),
            ],
            check=True,
            env=env,
        )
    shutil.copyfile(demo, many / "demo.duckdb")
    first = "2026-01-01"
    last = time.strftime(
        "%Y-%m-%d", time.gmtime(time.mktime(time.strptime(first, "%Y-%m-%d")) + 86400 * (args.days - 1))
    )
    end = time.strftime("%Y-%m-%d", time.gmtime(time.mktime(time.strptime(last, "%Y-%m-%d")) + 86400))

    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "emberharmony_assets.main",
            "--entities",
            str(args.entities),
            "--days",
            str(args.days),
            "--home",
            str(one),
            "--backend",
            "numpy",
        ],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    one_s = time.monotonic() - started

    from emberharmony_assets.scale_out import queue_yaml
    from emberharmony_assets.testing import dagster_dev

    (many / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + queue_yaml(args.workers))
    env_many = {
        **env,
        "DAGSTER_HOME": str(many / "dagster_home"),
        "EMBERHARMONY_HOME": str(many),
        "EMBERHARMONY_SOURCE": "duckdb",
        "EMBERHARMONY_PARTITION_START": first,
        "EMBERHARMONY_PARTITION_END": end,
    }
    subprocess.run(
        [sys.executable, "-c", "from dagster import DagsterInstance; DagsterInstance.get().get_run_records()"],
        check=True,
        env=env_many,
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )  # the storages, before two processes race
    with dagster_dev(
        many / "dagster_home", env=env_many, workspace=ROOT / "workspace.yaml", log=work / "dagster_dev.log", grace=30
    ) as server:
        started = time.monotonic()
        waves = subprocess.run(
            [
                sys.executable,
                "-m",
                "emberharmony_assets.scale_out",
                "--from",
                first,
                "--to",
                last,
                "--url",
                server.url,
                "--runs-per-wave",
                str(args.workers),
            ],
            cwd=ROOT,
            env=env_many,
            capture_output=True,
            text=True,
        )
        many_s = time.monotonic() - started
    if waves.returncode:
        print(waves.stdout, waves.stderr[-4000:])
        return 1
    a, b = digests(one / "artifacts"), digests(many / "artifacts")
    differ = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
    rows = args.entities * args.days * 48
    print(f"{args.entities:,} entities x {args.days} days ({rows:,} rows), each run on one core")
    print(f"1 worker (one run over the range): {one_s:.1f} s")
    print(
        f"{args.workers} workers (scale_out waves, {args.workers} runs of a pass at once): {many_s:.1f} s "
        f"-> {one_s / many_s:.2f}x"
    )
    print("waves: " + "; ".join(line for line in waves.stdout.splitlines() if ": " in line and " run(s)" in line))
    print(f"artifacts: {len(a)} files, {'all byte-identical' if not differ else f'{len(differ)} DIFFER: {differ[:5]}'}")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
