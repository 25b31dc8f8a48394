"""The seed's pipeline, re-implemented as the benchmark baseline, does what the seed does (bugs included)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_seed
from emberharmony_core.demo import DemoConfig, write_demo_table

# 4 sensors, a reading every 30 min for 3 days: every hour 0..23 occurs; 576 rows
TINY = DemoConfig(entities=4, days=3, start="2026-01-03")  # a Saturday, a Sunday and a Monday


@pytest.fixture(scope="module")
def tiny_database(tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "tiny.duckdb"
    write_demo_table(path, TINY)
    return str(path)


@pytest.fixture(scope="module")
def seed_result(tiny_database):
    return bench_seed.run_seed(tiny_database, chunk_size=100, keep_frames=True)


def test_reads_with_limit_offset_and_no_order_by():
    assert bench_seed.chunk_query("t", 100_000, 0) == '/*+ OPTIMIZE_FOR_LARGE_TABLES */ SELECT * FROM "t" LIMIT 100000'
    query = bench_seed.chunk_query("t", 100_000, 200_000)
    assert query.endswith("LIMIT 100000 OFFSET 200000") and "ORDER BY" not in query


def test_reads_every_row_in_chunks_into_one_frame(tiny_database):
    frame, types = bench_seed.read_table_in_chunks(tiny_database, "sensor_readings", chunk_size=100)  # 6 chunks
    assert len(frame) == TINY.rows == 576
    assert frame.index.equals(pd.RangeIndex(576))  # pd.concat(..., ignore_index=True)
    assert "STRUCT" in types["meta"].upper()
    detected = bench_seed.detect_column_types(frame, types, ["site", "status"])
    assert detected["struct"] == ["meta"] and detected["categorical"] == ["site", "status"]
    assert "maintenance" in detected["numeric"] and "sensor_id" not in sum(detected.values(), [])


def test_cyclical_features_use_the_seeds_periods():
    ts = pd.to_datetime(
        ["2026-01-04 23:00", "2026-01-05 00:00", "2026-12-31 12:00"], utc=True
    )  # Sun 23h, Mon 0h, Dec 31
    out = bench_seed.create_datetime_features(pd.DataFrame({"ts": ts}), "ts")
    # hour 23 / 23 = 1 -> sin(2 pi) = 0, cos = 1: 23:00 lands on midnight (the seed's bug)
    assert out["ts_sin_hour"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    assert out["ts_cos_hour"].iloc[0] == pytest.approx(1.0)
    assert out["ts_sin_hour"].iloc[0] == pytest.approx(out["ts_sin_hour"].iloc[1], abs=1e-12)
    # Sunday (6 / 6) lands on Monday (0), December (11 / 11) on January, day 31 ((31 - 1) / 30) on day 1
    assert out["ts_sin_dayofweek"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    assert out["ts_cos_dayofweek"].iloc[0] == pytest.approx(out["ts_cos_dayofweek"].iloc[1])
    assert out["ts_sin_month"].iloc[2] == pytest.approx(0.0, abs=1e-12) and out["ts_cos_month"].iloc[
        2
    ] == pytest.approx(1.0)
    assert out["ts_sin_day"].iloc[2] == pytest.approx(0.0, abs=1e-12)


def test_split_is_the_seeds_fresh_random_draw(seed_result):
    np.random.seed(42)
    draw = np.random.rand(TINY.rows)
    assert seed_result.split_rows == {
        "train": int((draw < 0.8).sum()),
        "validation": int(((draw >= 0.8) & (draw < 0.9)).sum()),
        "test": int((draw >= 0.9).sum()),
    }


def test_prepared_frames_carry_the_seeds_hour_collision_and_struct_bug(seed_result):
    train = seed_result.frames["train"]
    for name in ("ts_sin_hour", "ts_cos_hour", "meta_rack", "site_north", "status_ok", "temperature"):
        assert name in seed_result.features
    assert "load_next_hour" not in seed_result.features  # the target stays out
    # the seed's json_normalize frame has a fresh index: the concat adds rows (a seed bug, kept)
    assert seed_result.prepared_rows["train"] > seed_result.split_rows["train"]
    # features are imputed and scaled (train mean ~0); 23:00 and 00:00 rows still share their hour features
    assert np.isfinite(train[seed_result.features].to_numpy(dtype=float)).all()
    hours = train["ts"].dt.hour
    at_23, at_0 = train.loc[hours == 23, "ts_sin_hour"], train.loc[hours == 0, "ts_sin_hour"]
    assert len(at_23) and len(at_0)
    assert np.allclose(at_23.to_numpy(), at_0.iloc[0], atol=1e-9)
    assert np.allclose(train.loc[hours == 23, "ts_cos_hour"], train.loc[hours == 0, "ts_cos_hour"].iloc[0], atol=1e-9)


def test_aligned_struct_index_keeps_the_split_rows(tiny_database):
    result = bench_seed.run_seed(tiny_database, align_struct_index=True)
    assert result.prepared_rows == result.split_rows
    assert "maintenance" in result.features  # stays boolean (numeric) when no NaN rows are added


def test_one_incremental_pca_per_stride_with_32_components(seed_result):
    d = 5 * len(seed_result.features)
    assert d >= 32
    assert sorted(seed_result.models) == [1, 3, 5]
    for stride, model in seed_result.models.items():
        assert model.n_components_ == 32 and model.components_.shape == (32, d)
        assert seed_result.projected_shapes[stride] == [seed_result.windows[stride], 32]
    # one batch (fewer than 10,000 rows): windows start every `stride` rows
    n = seed_result.prepared_rows["train"]
    assert seed_result.windows == {s: (n - 5) // s + 1 for s in (1, 3, 5)}


def test_state_buffer_re_emits_windows_across_batches():
    processor = bench_seed.StrideProcessor(window_size=5, stride_perspectives=[1, 3], pca_components=2, batch_size=50)
    data = np.random.default_rng(0).normal(size=(100, 3))
    out = processor.process_large_dataset(iter([data[:50], data[50:]]))
    # the second batch is the buffer (the last max(strides) * window = 15 rows) + 50 new rows: the
    # windows within the buffer are emitted a second time
    buffer = 3 * 5
    assert processor.windows_made[1] == (50 - 5 + 1) + (buffer + 50 - 5 + 1)
    assert out[1].shape == (processor.windows_made[1], 2)


def test_command_line_writes_json(tiny_database, tmp_path, capsys):
    path = tmp_path / "seed.json"
    assert bench_seed.main(["--database", tiny_database, "--components", "8", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "seed: 576 rows in" in printed and "peak RSS" in printed
    summary = json.loads(path.read_text())
    assert summary["rows"] == 576 and summary["seconds"] > 0 and summary["peak_rss_bytes"] > 0
    assert summary["components"] == {"1": 8, "3": 8, "5": 8}
