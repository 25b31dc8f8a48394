"""The window carry streams: ``Windower`` reads the previous partition's carry and writes the next one in
entity key order, a chunk's entities at a time, through a real ``ArtifactStore`` (Arrow IPC files).

The reference is each entity's whole series windowed on its own (``series_starts``), whatever the
chunking, the partitioning, and entities that skip partitions or first appear late."""

import numpy as np
import pyarrow as pa
import pytest

from emberharmony_core import layout
from emberharmony_core.layout import CarryWriter, StoredCarry, has_carry
from emberharmony_core.ops import get_backend
from emberharmony_core.store import ArtifactReadError, ArtifactStore
from emberharmony_core.windowing import ChunkRows, WindowCarry, Windower, series_starts

NUMPY = get_backend("numpy")
W, STRIDES, F = 4, (1, 3), 2


def series_table(rng, keys, partitions: int):
    """Per partition, rows grouped by entity in ascending key order: some entities skip partitions, some start
    late, one has a single row in total; times increase across partitions."""
    parts = []
    for p in range(partitions):
        rows = []
        for i, key in enumerate(keys):
            if i == 0 and p:  # a single row in the whole series
                continue
            if i % 4 == 1 and p % 2:  # skips every other partition
                continue
            if i % 5 == 2 and p < partitions // 2:  # first appears half way
                continue
            count = 1 if i == 0 else int(rng.integers(0, 7))
            for t in range(count):
                rows.append((key, p * 1000 + t, rng.standard_normal(F)))
        parts.append(rows)
    return parts


def run_partitions(parts, chunk: int | None, store=None):
    """Window every partition chunk by chunk, the carry going through ``store`` (or memory): the windows by
    (entity, end time) per stride, and the last carry."""
    found: dict[int, dict[tuple[object, object], np.ndarray]] = {s: {} for s in STRIDES}
    carry = None
    for p, rows in enumerate(parts):
        sink_context = CarryWriter(store, f"p{p}", W, F, "float64") if store is not None else None
        source = StoredCarry(store, f"p{p - 1}") if store is not None and p else carry
        with sink_context or _nothing() as sink:
            windower = Windower(W, STRIDES, source, n_features=F, dtype="float64", sink=sink)
            size = chunk or max(len(rows), 1)
            for c0 in range(0, len(rows), size):
                piece = rows[c0 : c0 + size]
                made = windower.add(
                    ChunkRows(
                        features=np.array([r[2] for r in piece]).reshape(-1, F),
                        entity=np.array([r[0] for r in piece], dtype=object),
                        time=np.array([r[1] for r in piece], np.int64),
                        split=np.zeros(len(piece), np.int8),
                    ),
                    NUMPY,
                )
                data = NUMPY.to_numpy(made.rows)
                for s in STRIDES:
                    for start, end in zip(made.starts[s], made.end_row[s], strict=True):
                        key = (piece[end][0], piece[end][1])
                        assert key not in found[s], "a window made twice"
                        found[s][key] = data[start : start + W].reshape(-1)
            carry = windower.finish()
    return found, (StoredCarry(store, f"p{len(parts) - 1}").load() if store is not None else carry)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def reference(parts):
    series = {}
    for rows in parts:
        for key, t, x in rows:
            series.setdefault(key, []).append((t, x))
    found = {s: {} for s in STRIDES}
    for key, items in series.items():
        x = np.array([v for _, v in items])
        for s in STRIDES:
            for start in series_starts(len(items), W, s):
                found[s][(key, items[start + W - 1][0])] = x[start : start + W].reshape(-1)
    return found, series


@pytest.mark.parametrize("key_kind", ["str", "int"])
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_streamed_carry_gives_each_entitys_whole_series_windows(tmp_path, monkeypatch, key_kind, chunk):
    monkeypatch.setattr(
        layout, "_CARRY_BATCH_BYTES", 1
    )  # a stored batch per hand-over: every batch boundary is crossed
    rng = np.random.default_rng(3)
    keys = sorted(f"sensor_{i:03d}" for i in range(23)) if key_kind == "str" else list(range(0, 230, 10))
    parts = series_table(rng, keys, partitions=5)
    want, series = reference(parts)
    store = ArtifactStore(tmp_path / "artifacts")
    got, carry = run_partitions(parts, chunk, store)
    in_memory, memory_carry = run_partitions(parts, chunk)
    for s in STRIDES:
        assert got[s].keys() == want[s].keys() == in_memory[s].keys()
        for key in want[s]:
            np.testing.assert_array_equal(got[s][key], want[s][key])
    # the stored carry: every entity ever seen, in key order, with its count and last W - 1 rows
    assert carry.keys.to_pylist() == sorted(series) == memory_carry.keys.to_pylist()
    for i, key in enumerate(carry.keys.to_pylist()):
        items = series[key]
        assert carry.seen[i] == len(items)
        tail = np.array([v for _, v in items[-(W - 1) :]])
        np.testing.assert_array_equal(carry.rows[i, W - 1 - len(tail) :], tail)
        assert (carry.rows[i, : W - 1 - len(tail)] == 0).all()
    np.testing.assert_array_equal(carry.rows, memory_carry.rows)


def test_a_partition_without_rows_passes_the_carry_on_unchanged(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    first = ChunkRows(
        np.arange(12.0).reshape(6, 2),
        np.array(["a", "a", "a", "b", "b", "c"], dtype=object),
        np.arange(6, dtype=np.int64),
        np.zeros(6, np.int8),
    )
    with CarryWriter(store, "d1", 3, 2, "float64") as sink:
        windower = Windower(3, [1], n_features=2, dtype="float64", sink=sink)
        windower.add(first, NUMPY)
        windower.finish()
    with CarryWriter(store, "d2", 3, 2, "float64") as sink:  # no chunk at all
        Windower(3, [1], StoredCarry(store, "d1"), n_features=2, dtype="float64", sink=sink).finish()
    before, after = StoredCarry(store, "d1").load(), StoredCarry(store, "d2").load()
    assert after.keys.to_pylist() == before.keys.to_pylist() == ["a", "b", "c"]
    np.testing.assert_array_equal(after.seen, [3, 2, 1])
    np.testing.assert_array_equal(after.rows, before.rows)


def test_an_empty_first_partition_stores_an_empty_carry_later_keys_of_any_type_continue(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    with CarryWriter(store, "d1", 3, 1, "float32") as sink:
        Windower(3, [1], n_features=1, sink=sink).finish()
    assert has_carry(store, "d1") and len(StoredCarry(store, "d1").load()) == 0
    chunk = ChunkRows(
        np.ones((3, 1), np.float32),
        np.array(["x"] * 3, dtype=object),
        np.arange(3, dtype=np.int64),
        np.zeros(3, np.int8),
    )
    made = Windower(3, [1], StoredCarry(store, "d1"), n_features=1, sink=False).add(chunk, NUMPY)
    assert list(made.end_row[1]) == [2]


def test_rows_out_of_ascending_entity_order_fail_naming_the_two_keys():
    windower = Windower(3, [1], n_features=1, sink=False)
    rows = ChunkRows(
        np.ones((4, 1), np.float32),
        np.array(["b", "b", "a", "a"], dtype=object),
        np.arange(4, dtype=np.int64),
        np.zeros(4, np.int8),
    )
    with pytest.raises(ValueError, match=r"not grouped by entity in ascending key order: entity 'b' comes before 'a'"):
        windower.add(rows, NUMPY)
    # across chunks too: an entity that comes back after another one
    windower = Windower(3, [1], n_features=1, sink=False)
    windower.add(
        ChunkRows(
            np.ones((2, 1), np.float32),
            np.array(["a", "c"], dtype=object),
            np.arange(2, dtype=np.int64),
            np.zeros(2, np.int8),
        ),
        NUMPY,
    )
    with pytest.raises(ValueError, match=r"entity 'c' comes before 'a'"):
        windower.add(
            ChunkRows(
                np.ones((1, 1), np.float32),
                np.array(["a"], dtype=object),
                np.arange(1, dtype=np.int64),
                np.zeros(1, np.int8),
            ),
            NUMPY,
        )


def test_a_carry_of_other_entity_keys_fails_naming_both_types():
    carry = WindowCarry(3, 1, keys=pa.array([1, 2]), seen=[2, 2])
    rows = ChunkRows(
        np.ones((1, 1), np.float32), np.array(["a"], dtype=object), np.zeros(1, np.int64), np.zeros(1, np.int8)
    )
    with pytest.raises(
        ValueError, match=r"carried entity keys are int64, the chunk's string: the entity column changed"
    ):
        Windower(3, [1], carry, n_features=1, sink=False).add(rows, NUMPY)


def test_a_failed_partition_keeps_the_old_carry_and_leaves_no_temporary_file(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    carry = WindowCarry(3, 1, keys=pa.array(["a"]), seen=[5])
    layout.save_carry(store, "d1", carry)
    with pytest.raises(RuntimeError, match="boom"), CarryWriter(store, "d1", 3, 1, "float32") as sink:
        sink(WindowCarry(3, 1, keys=pa.array(["z"]), seen=[1]))
        raise RuntimeError("boom")
    assert StoredCarry(store, "d1").load().seen.tolist() == [5]
    assert not [p for p in (tmp_path / "artifacts").rglob("*") if p.name.endswith(".tmp")]


def test_a_damaged_carry_file_names_its_partition(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    layout.save_carry(store, "2026-01-01", WindowCarry(3, 1, keys=pa.array(["a"]), seen=[5]))
    path = tmp_path / "artifacts" / "window_carry" / "2026-01-01.arrow"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ArtifactReadError, match=r"window_carry, partition 2026-01-01"):
        StoredCarry(store, "2026-01-01").load()


def test_a_carry_rewritten_while_a_windower_reads_it_is_read_as_one_version(tmp_path, monkeypatch):
    """Both passes over the previous carry (finding the chunk's entities, passing the others on) read the file
    opened once: a run that rewrites that partition meanwhile does not mix two versions."""
    monkeypatch.setattr(layout, "_CARRY_BATCH_BYTES", 1)
    store = ArtifactStore(tmp_path / "artifacts")
    old = WindowCarry(3, 1, "float64", keys=pa.array(["a", "b", "c"]), seen=[4, 4, 4])
    layout.save_carry(store, "d1", old)
    source = StoredCarry(store, "d1")
    layout.save_carry(store, "d1", WindowCarry(3, 1, "float64", keys=pa.array(["a", "b", "c"]), seen=[9, 9, 9]))
    windower = Windower(3, [1], source, n_features=1, dtype="float64")
    windower.add(
        ChunkRows(np.ones((1, 1)), np.array(["b"], dtype=object), np.zeros(1, np.int64), np.zeros(1, np.int8)), NUMPY
    )
    assert windower.finish().seen.tolist() == [4, 5, 4]
