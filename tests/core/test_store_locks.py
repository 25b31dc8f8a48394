"""The artifact store's locks: runs write side by side, a wipe never deletes under a running writer.

``<base>/.writers.lock`` is held SHARED by every writing run and EXCLUSIVE (without waiting) by
``ArtifactStore.wipe()`` (``main.py --fresh``); each file write holds its own lock from the temporary
file to the rename, so writers of one partition file serialise and of different files never wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions, asset, define_asset_job, materialize

from emberharmony_assets.resources import ArtifactStoreResource
from emberharmony_core.store import WRITERS_LOCK, ArtifactStore, StoreBusyError

ROOT = Path(__file__).resolve().parents[2]

# a second process that holds the writers lock (as a run does) until its stdin closes
HOLDER = """
import sys
from emberharmony_core.store import ArtifactStore
lock = ArtifactStore(sys.argv[1]).writers_lock(owner="run holder01 (test_job)")
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


def start_holder(base) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(base)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def stop_holder(holder: subprocess.Popen) -> None:
    assert holder.stdin is not None  # started with stdin=PIPE
    holder.stdin.close()
    holder.wait(timeout=30)


def frame(value: int, rows: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"x": [value] * rows})


def test_wipe_fails_at_once_naming_the_other_writer_process_and_deletes_nothing(tmp_path):
    base = tmp_path / "artifacts"
    store = ArtifactStore(base)
    store.write_frame(frame(1), "raw_chunk", "2026-01-01")
    holder = start_holder(base)
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusyError) as info:
            store.wipe()
        assert time.monotonic() - started < 1.0  # no waiting
        message = str(info.value)
        assert f"another run is writing here (pid {holder.pid}, run holder01 (test_job)" in message
        assert str(base) in message
        assert store.read_frame("raw_chunk", "2026-01-01")["x"].tolist() == [1] * 10  # nothing deleted
    finally:
        stop_holder(holder)
    store.wipe()  # the writer is gone: the wipe goes through, the lock file stays
    assert sorted(os.listdir(base)) == [WRITERS_LOCK]
    assert store.frame_keys("raw_chunk") == []


def test_a_killed_writer_leaves_no_lock_and_its_note_is_ignored(tmp_path):
    base = tmp_path / "artifacts"
    store = ArtifactStore(base)
    holder = start_holder(base)
    assert [n["pid"] for n in store.writers()] == [holder.pid]
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert store.writers() == []  # its note is still there, but its pid is dead
    store.wipe()  # the kernel released its flock


def test_wipe_vs_a_writer_thread_with_its_own_file_handle(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    locked, done = threading.Event(), threading.Event()

    def writer():
        with ArtifactStore(tmp_path / "artifacts").writers_lock(owner="run thread01 (job)"):
            locked.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert locked.wait(10)
        with pytest.raises(StoreBusyError, match=rf"another run is writing here \(pid {os.getpid()}, run thread01"):
            store.wipe()
    finally:
        done.set()
        thread.join()
    store.wipe()


def test_writers_of_different_partitions_do_not_wait_for_each_other(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    inside, finish = threading.Event(), threading.Event()

    def slow_writer():
        with ArtifactStore(tmp_path / "artifacts").frame_writer("features", "2026-01-01") as out:
            out.write(frame(1))
            inside.set()
            finish.wait(10)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        store.write_frame(frame(2), "features", "2026-01-02")  # another partition of the same asset
        store.write_frame(frame(3), "split_data", "2026-01-01")  # the same partition of another asset
        assert time.monotonic() - started < 1.0
        assert thread.is_alive()  # the first writer is still inside its block
    finally:
        finish.set()
        thread.join()
    assert store.frame_keys("features") == ["2026-01-01", "2026-01-02"]


def test_writers_of_one_partition_file_serialise_and_the_later_one_wins_whole(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    inside, events = threading.Event(), []

    def first():
        with ArtifactStore(tmp_path / "artifacts").frame_writer("features", "2026-01-01") as out:
            out.write(frame(1))
            inside.set()
            time.sleep(0.5)
            out.write(frame(1))
            events.append(("first done", time.monotonic()))

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with store.frame_writer("features", "2026-01-01") as out:  # waits for the first writer's rename
        events.append(("second in", time.monotonic()))
        out.write(frame(2, rows=3))
    thread.join()
    assert [name for name, _ in sorted(events, key=lambda e: e[1])] == ["first done", "second in"]
    assert store.read_frame("features", "2026-01-01")["x"].tolist() == [2, 2, 2]  # one writer's file, whole
    assert not list((tmp_path / "artifacts").rglob("*.tmp"))


def test_a_writer_of_the_same_file_gives_up_after_lock_timeout_naming_the_file(tmp_path):
    inside, finish = threading.Event(), threading.Event()

    def holder():
        with ArtifactStore(tmp_path / "artifacts").frame_writer("features", "2026-01-01") as out:
            out.write(frame(1))
            inside.set()
            finish.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(10)
        impatient = ArtifactStore(tmp_path / "artifacts", lock_timeout=0.2)
        with pytest.raises(StoreBusyError, match=r"features/date=2026-01-01/part-0\.parquet .*another writer"):
            impatient.write_frame(frame(2), "features", "2026-01-01")
    finally:
        finish.set()
        thread.join()
    assert ArtifactStore(tmp_path / "artifacts").read_frame("features", "2026-01-01")["x"].tolist() == [1] * 10


def test_a_writer_waits_for_a_wipe_then_proceeds(tmp_path):
    base = tmp_path / "artifacts"
    store = ArtifactStore(base)
    store.write_json({"a": 1}, "preprocessor", "preprocessor")
    import fcntl

    fd = os.open(base / WRITERS_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a wipe in progress
    with pytest.raises(StoreBusyError, match="is being wiped"):
        store.writers_lock(timeout=0.1)
    threading.Timer(0.2, os.close, [fd]).start()
    with store.writers_lock(timeout=10) as lock:
        assert lock.held and [n["pid"] for n in store.writers()] == [os.getpid()]
    assert store.writers() == []  # released: its note is gone


def test_lock_files_are_not_artifacts(tmp_path):
    import pyarrow.dataset as ds

    store = ArtifactStore(tmp_path / "artifacts")
    store.write_frame(frame(1), "features", "2026-01-01")
    store.write_frame(frame(2), "stride_windows", "2026-01-01", "stride=3")
    store.write_arrays({"a": [1, 2]}, "stride_windows", "carry", "2026-01-01")
    store.write_json({"a": 1}, "preprocess_stats", "2026-01-01")
    with store.writers_lock():
        assert store.list_names("stride_windows", "carry", suffix=".npz") == ["2026-01-01"]
        assert store.list_names("preprocess_stats", suffix=".json") == ["2026-01-01"]
        assert store.frame_keys("features") == ["2026-01-01"]
        assert store.frame_keys("stride_windows", "stride=3") == ["2026-01-01"]
        assert sorted(p.name for p in (tmp_path / "artifacts").iterdir() if not p.name.startswith(".")) == [
            "features",
            "preprocess_stats",
            "stride_windows",
        ]
        files = ds.dataset(tmp_path / "artifacts" / "features", format="parquet", partitioning="hive").files
        assert [Path(f).name for f in files] == ["part-0.parquet"]
        hidden = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file() and ".lock" in p.name]
        assert hidden and all(
            any(part.startswith(".") for part in p.relative_to(tmp_path / "artifacts").parts) for p in hidden
        )
        assert all(p.stat().st_size == 0 for p in hidden)  # empty: nothing differs between runs


def test_locks_cost_well_under_a_tenth_of_a_millisecond_per_write(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    target = store.path("pca_stats", "stride=1", "2026-01-01", suffix=".npz")
    with store._target_lock(target):  # the lock file exists after the first write
        pass
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(500):
            with store._target_lock(target):
                pass
        best = min(best, (time.perf_counter() - started) / 500)
    assert best < 1e-4, f"{best * 1e6:.1f} us per lock"


def test_non_local_stores_write_and_wipe_without_locks():
    store = ArtifactStore(f"memory://locks-test-{os.getpid()}/artifacts")
    with store.writers_lock() as lock:
        assert not lock.held  # a no-op: object stores have no flock
        store.write_frame(frame(1), "features", "2026-01-01")
        store.write_json({"a": 1}, "preprocessor", "preprocessor")
    assert store.frame_keys("features") == ["2026-01-01"]
    store.wipe()
    assert store.frame_keys("features") == []


def test_the_dagster_store_resource_holds_the_lock_for_the_run_and_releases_it(tmp_path):
    seen = {}

    @asset
    def probe(store: ArtifactStoreResource) -> None:
        artifacts = store.get()
        seen["writers"] = artifacts.writers()
        try:
            artifacts.wipe()
        except StoreBusyError as exc:
            seen["wipe"] = str(exc)
        artifacts.write_json({"a": 1}, "probe", "probe")

    resources = {"store": ArtifactStoreResource(base_path=str(tmp_path / "artifacts"))}
    result = materialize([probe], resources=resources, instance=DagsterInstance.ephemeral())
    assert result.success
    assert [n["pid"] for n in seen["writers"]] == [os.getpid()]
    assert seen["writers"][0]["owner"] == f"run {result.run_id[:8]} (__ephemeral_asset_job__)"
    assert f"another run is writing here (pid {os.getpid()}, run {result.run_id[:8]}" in seen["wipe"]
    assert ArtifactStore(tmp_path / "artifacts").writers() == []  # released at teardown

    job = Definitions(assets=[probe], jobs=[define_asset_job("probe_job")], resources=resources).resolve_job_def(
        "probe_job"
    )
    seen.clear()
    result = job.execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success and f"run {result.run_id[:8]} (probe_job)" in seen["wipe"]
    assert ArtifactStore(tmp_path / "artifacts").writers() == []
    ArtifactStore(tmp_path / "artifacts").wipe()


def test_main_fresh_fails_at_once_while_another_run_writes_and_touches_nothing(tmp_path):
    home = tmp_path / "home"
    base = home / "artifacts"
    ArtifactStore(base).write_json({"a": 1}, "preprocessor", "preprocessor")
    holder = start_holder(base)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBERHARMONY_", "DAGSTER_"))}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "emberharmony_assets.main",
                "--home",
                str(home),
                "--fresh",
                "--days",
                "2",
                "--entities",
                "4",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop_holder(holder)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"another run is writing here (pid {holder.pid}, run holder01 (test_job)" in done.stderr
    assert str(base) in done.stderr
    assert ArtifactStore(base).read_json("preprocessor", "preprocessor") == {"a": 1}
    assert not (home / "demo.duckdb").exists()  # it failed before regenerating the demo table
