"""FrameWriter: row groups encoded on the background thread land in order and whole; an error there is raised
by the writer's next call and nothing is renamed into place; a forked child writes on its own thread."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emberharmony_core import store as store_module
from emberharmony_core.store import ArtifactStore


def chunk(start: int, rows: int) -> pa.Table:
    index = np.arange(start, start + rows)
    return pa.table({"row": index, "value": (index * 0.5).astype(np.float32)})


def test_row_groups_are_written_in_order_one_per_chunk(tmp_path):
    store = ArtifactStore(tmp_path)
    sizes = [1, 7, 1000, 3, 250]
    with store.frame_writer("features", "2026-01-01") as writer:
        start = 0
        for rows in sizes:
            writer.write(chunk(start, rows))
            start += rows
    handle = pq.ParquetFile(store.frame_path("features", "2026-01-01").path)
    assert [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)] == sizes
    table = handle.read()
    assert table["row"].to_pylist() == list(range(sum(sizes)))
    assert np.array_equal(table["value"].to_numpy(), (np.arange(sum(sizes)) * 0.5).astype(np.float32))


class FailingWriter:
    """Stands in for pyarrow's ParquetWriter (a real write error cannot be provoked portably): the second
    row group fails, on the background thread."""

    def __init__(self):
        self.calls = 0

    def write_table(self, table):
        self.calls += 1
        if self.calls == 2:
            raise OSError("disk full (simulated)")

    def close(self):
        pass


def test_a_background_write_error_is_raised_and_nothing_is_kept(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    monkeypatch.setattr(store_module.FrameWriter, "_open", lambda self: setattr(self, "_writer", FailingWriter()))
    with pytest.raises(OSError, match="disk full"), store.frame_writer("features", "2026-01-01") as writer:
        for start in range(0, 40, 10):
            writer.write(chunk(start, 10))
    folder = store.frame_path("features", "2026-01-01").parent
    assert not store.has_frame("features", "2026-01-01")
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_on_its_own_thread(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_frame(chunk(0, 5).to_pandas(), "features", "2026-01-01")  # the parent's thread exists now
    pid = os.fork()
    if pid == 0:  # the child: a thread that was the parent's does not exist here
        code = 1
        try:
            ArtifactStore(tmp_path).write_frame(chunk(0, 9).to_pandas(), "features", "2026-01-02")
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:  # a child waiting on its parent's (absent) thread would hang
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's write did not finish in 60 s")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    assert store.read_frame("features", "2026-01-02")["row"].tolist() == list(range(9))


def test_delta_columns_read_back_equal_and_take_far_less_than_a_dictionary(tmp_path):
    """A window index's row numbers and end times (increasing within an entity) stored DELTA_BINARY_PACKED."""
    store = ArtifactStore(tmp_path)
    rows = np.concatenate([np.arange(0, 3000), np.arange(3005, 6000)])  # a jump, as where windows are dropped
    index = pa.table(
        {
            "row": rows,
            "end_time": pa.array((rows % 48) * 1_800_000_000_000, pa.timestamp("ns", tz="UTC")),
            "split": pa.array(["train"] * len(rows)),
        }
    )
    sizes = {}
    for delta in ((), ("row", "end_time")):
        with store.frame_writer("stride_windows", "2026-01-01", "stride=1", delta=delta) as writer:
            writer.write(index)
        handle = pq.ParquetFile(store.frame_path("stride_windows", "2026-01-01", "stride=1").path)
        assert handle.read().equals(index)
        column = handle.metadata.row_group(0).column(0)
        sizes[delta] = column.total_compressed_size
        assert ("DELTA_BINARY_PACKED" in column.encodings) == bool(delta)
    assert sizes[("row", "end_time")] * 10 < sizes[()], sizes


def test_pca_statistics_round_trip_exactly_through_parquet(tmp_path):
    from emberharmony_core.features.pca import PCAStats
    from emberharmony_core.layout import load_pca_stats, pca_stats_keys, save_pca_stats

    store = ArtifactStore(tmp_path)
    rng = np.random.default_rng(3)
    stats = {
        1: PCAStats().update(rng.standard_normal((500, 12)) * 1e3),
        3: PCAStats().update(rng.standard_normal((90, 12))),
        5: PCAStats(),
    }  # a stride without train windows that day
    save_pca_stats(store, "2026-01-02", stats)
    save_pca_stats(store, "2026-01-01", {1: PCAStats()})
    back = load_pca_stats(store, "2026-01-02")
    assert sorted(back) == [1, 3, 5]
    for stride in (1, 3):
        assert back[stride].n_samples == stats[stride].n_samples and back[stride].n_features == 12
        np.testing.assert_array_equal(back[stride].mean, stats[stride].mean)
        np.testing.assert_array_equal(back[stride].scatter, stats[stride].scatter)  # bit for bit: float64 as float64
    assert back[5].n_samples == 0 and back[5].n_features is None
    assert pca_stats_keys(store) == ["2026-01-01", "2026-01-02"]
    # queryable as it is: one row per stride
    table = pq.read_table(tmp_path / "pca_stats" / "date=2026-01-02" / "part-0.parquet")
    assert table.column_names == ["stride", "n_samples", "n_features", "mean", "scatter_upper"]
    assert table["stride"].to_pylist() == [1, 3, 5] and len(table["scatter_upper"][0]) == 12 * 13 // 2
