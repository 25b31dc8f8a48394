"""The graph's outputs read as they are by DuckDB and ``pyarrow.dataset``, with the numbers the core computes.

The store writes Hive-partitioned Parquet (``<artifacts>/features/date=K/part-0.parquet``,
``<artifacts>/projected_windows/stride=S/date=K/part-0.parquet``, ``<artifacts>/stride_windows/stride=S/date=K/...``;
LZ4_RAW pages, BYTE_STREAM_SPLIT floats, ``timestamp[ns, UTC]``). What this shows, on a 3-day run of the whole graph:

* DuckDB (``read_parquet('<artifacts>/<asset>/**/*.parquet', hive_partitioning=true)``) reads every one of them as
  it is, ``stride`` typed BIGINT and ``date`` DATE from the folder names; counts per stride and date, means of
  ``pc_1`` and every row equal the core's ``load_stride_windows`` + the stored ``PCAModel.transform`` (and
  ``ArtifactStore.read_frame`` for ``features``).
* ``pyarrow.dataset`` (``partitioning="hive"``: ``stride`` int32, ``date`` string) reads ``features`` and
  ``projected_windows`` as they are. ``stride_windows`` needs ``exclude_invalid_files=True`` (or DuckDB's
  ``*.parquet`` glob): that folder also holds ``carry/<day>.arrow`` and ``layout.json``, which a plain
  ``ds.dataset(<artifacts>/stride_windows)`` tries to open as Parquet.
* The store's hidden files (``.writers.lock``, ``.writers/``, ``.locks/``, a writer's ``.part-0.parquet.*.tmp``)
  never appear in those reads, even while a run holds the locks and a file is half-written.

Not shown here: BigQuery external tables (no BigQuery offline; the emulator reads no Parquet from GCS).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from emberharmony_assets import testing
from emberharmony_core.features.pca import PCAModel
from emberharmony_core.layout import load_stride_windows, stride_folder
from emberharmony_core.store import ArtifactStore

from .conftest import PARTITIONS, make_resources

KEYS = PARTITIONS[:3]
STRIDES = (1, 3, 5)
K = 8  # make_resources' n_components


@pytest.fixture(scope="module")
def store(demo_database, tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("queryable") / "artifacts"
    result = testing.materialize_days(KEYS[0], KEYS[-1], resources=make_resources(demo_database, str(artifacts)))
    assert result.success
    return ArtifactStore(str(artifacts))


@pytest.fixture(scope="module")
def core(store):
    """{(stride, key): (index, projected)} from the core: windows rebuilt from features + carry, stored model."""
    out = {}
    for stride in STRIDES:
        model = PCAModel.from_arrays(store.read_arrays("pca_models", stride_folder(stride)))
        for key in KEYS:
            windows, index = load_stride_windows(store, key, stride)
            out[stride, key] = index, np.asarray(model.transform(windows), dtype=np.float64)
    return out


def connect():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def glob(store, asset):
    return f"{store.base.path}/{asset}/**/*.parquet"


def test_duckdb_reads_projected_windows_as_they_are(store, core):
    con = connect()
    source = f"read_parquet('{glob(store, 'projected_windows')}', hive_partitioning = true)"
    types = dict(con.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})").fetchall())
    assert types["stride"] == "BIGINT" and types["date"] == "DATE"
    assert types["pc_1"] == "FLOAT" and types["end_time"].startswith("TIMESTAMP") and types["split"] == "VARCHAR"
    assert [c for c in types if c.startswith("pc_")] == [f"pc_{i}" for i in range(1, K + 1)]

    per_day = con.sql(
        f"SELECT stride, CAST(date AS VARCHAR) AS day, count(*) AS n, avg(pc_1) AS mean_pc_1, "
        f"count(*) FILTER (WHERE split = 'train') AS n_train FROM {source} GROUP BY ALL ORDER BY ALL"
    ).df()
    assert len(per_day) == len(STRIDES) * len(KEYS)
    for row in per_day.itertuples():
        index, projected = core[row.stride, row.day]
        assert row.n == len(index) > 0
        assert row.n_train == int((index["split"] == "train").sum())
        assert row.mean_pc_1 == pytest.approx(projected[:, 0].mean(), abs=1e-6)

    per_stride = dict(con.sql(f"SELECT stride, avg(pc_1) FROM {source} GROUP BY stride").fetchall())
    for stride in STRIDES:
        everything = np.concatenate([core[stride, key][1][:, 0] for key in KEYS])
        assert per_stride[stride] == pytest.approx(everything.mean(), abs=1e-6)

    # every row, in file order: the same windows (entity, end time, split) and the same projections
    pcs = ", ".join(f"pc_{i}" for i in range(1, K + 1))
    rows = f"read_parquet('{glob(store, 'projected_windows')}', hive_partitioning = true, file_row_number = true)"
    for stride in STRIDES:
        for key in KEYS:
            got = con.sql(
                f"SELECT sensor_id, epoch_ns(end_time) AS ns, split, {pcs} FROM {rows} "
                f"WHERE stride = {stride} AND date = DATE '{key}' ORDER BY file_row_number"
            ).df()
            index, projected = core[stride, key]
            assert list(got["sensor_id"]) == list(index["sensor_id"])
            assert (
                got["ns"].to_numpy() == pd.to_datetime(index["end_time"], utc=True).astype("int64").to_numpy()
            ).all()
            assert list(got["split"]) == list(index["split"])
            np.testing.assert_allclose(
                got[[f"pc_{i}" for i in range(1, K + 1)]].to_numpy(np.float64), projected, rtol=1e-6, atol=1e-6
            )  # float32 values (measured: bit-equal today)


def test_duckdb_reads_features_and_the_window_index_as_they_are(store, core):
    con = connect()
    source = f"read_parquet('{glob(store, 'features')}', hive_partitioning = true, file_row_number = true)"
    for key in KEYS:
        ours = store.read_frame("features", key)
        got = con.sql(
            f"SELECT * EXCLUDE (date, file_row_number) REPLACE (epoch_ns(ts) AS ts) FROM {source} "
            f"WHERE date = DATE '{key}' ORDER BY file_row_number"
        ).df()
        assert len(got) == len(ours) > 0
        assert list(got.columns) == list(ours.columns)
        assert (got["ts"].to_numpy() == ours["ts"].astype("int64").to_numpy()).all()
        for column in ours.columns.drop("ts"):
            if pd.api.types.is_float_dtype(ours[column]):
                np.testing.assert_array_equal(
                    got[column].to_numpy(ours[column].dtype), ours[column].to_numpy(), err_msg=column
                )
            else:
                assert list(got[column]) == list(ours[column]), column
    # aggregates over the whole dataset
    ours_all = pd.concat([store.read_frame("features", key) for key in KEYS], ignore_index=True)
    feature = [c for c in ours_all.columns if pd.api.types.is_float_dtype(ours_all[c])][1]
    ((n, mean),) = con.sql(f'SELECT count(*), avg("{feature}") FROM {source}').fetchall()
    assert n == len(ours_all) and mean == pytest.approx(ours_all[feature].astype(np.float64).mean(), abs=1e-9)

    windows = f"read_parquet('{glob(store, 'stride_windows')}', hive_partitioning = true, file_row_number = true)"
    for stride in STRIDES:
        for key in KEYS:
            rows = [
                r
                for (r,) in con.sql(
                    f"SELECT \"row\" FROM {windows} WHERE stride = {stride} AND date = DATE '{key}' "
                    f"ORDER BY file_row_number"
                ).fetchall()
            ]
            assert rows == list(core[stride, key][0]["row"])


def test_pyarrow_dataset_reads_them_as_they_are(store, core):
    projected = ds.dataset(f"{store.base.path}/projected_windows", format="parquet", partitioning="hive")
    assert projected.schema.field("stride").type == pa.int32() and projected.schema.field("date").type == pa.string()
    table = projected.to_table(columns=["stride", "date", "pc_1"])
    counts = table.group_by(["stride", "date"]).aggregate([("pc_1", "count"), ("pc_1", "mean")])
    assert counts.num_rows == len(STRIDES) * len(KEYS)
    for stride, key, n, mean in zip(
        *(counts.column(c).to_pylist() for c in ("stride", "date", "pc_1_count", "pc_1_mean")),
        strict=True,
    ):
        index, values = core[stride, key]
        assert n == len(index) and mean == pytest.approx(values[:, 0].mean(), abs=1e-6)
    one = projected.to_table(filter=(ds.field("stride") == 3) & (ds.field("date") == KEYS[1])).to_pandas()
    np.testing.assert_allclose(
        one[[f"pc_{i}" for i in range(1, K + 1)]].to_numpy(np.float64), core[3, KEYS[1]][1], rtol=1e-6, atol=1e-6
    )  # float32 values (measured: bit-equal today)

    features = ds.dataset(f"{store.base.path}/features", format="parquet", partitioning="hive")
    assert features.count_rows() == sum(store.frame_rows("features", key) for key in KEYS)
    day = features.to_table(filter=ds.field("date") == KEYS[2]).drop_columns(["date"])
    assert day.equals(
        pa.Table.from_pandas(store.read_frame("features", KEYS[2]), preserve_index=False).cast(day.schema)
    )

    # stride_windows/ also holds carry/<day>.arrow and layout.json: pyarrow must be told to skip non-Parquet files
    index = ds.dataset(
        f"{store.base.path}/stride_windows", format="parquet", partitioning="hive", exclude_invalid_files=True
    )
    assert all("/carry/" not in f and f.endswith(".parquet") for f in index.files)
    rows = index.to_table(filter=ds.field("stride") == 5, columns=["row"]).column("row")
    assert pc.sum(rows).as_py() == sum(int(core[5, key][0]["row"].sum()) for key in KEYS)


def hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def test_lock_and_temporary_files_never_show_up(store, core):
    base = store.base.path
    con = connect()
    assert (store.base / ".writers.lock").exists() and any((store.base / ".locks").iterdir())  # the run left them
    all_files = [f for (f,) in con.sql(f"SELECT file FROM glob('{base}/**')").fetchall()]
    assert any(hidden(f[len(base) :]) for f in all_files)  # DuckDB's ** does walk into .locks/ ...

    expected = {stride: sum(len(core[stride, key][0]) for key in KEYS) for stride in STRIDES}
    with (
        store.writers_lock("test"),  # a run writing here: .writers/ holds its note
        pytest.raises(RuntimeError, match="abandoned"),
        store.frame_writer("projected_windows", KEYS[0], stride_folder(1)) as writer,
    ):
        writer.write(store.read_frame("projected_windows", KEYS[0], stride_folder(1)).head(3))
        temporaries = [
            p.name
            for p in (store.base / "projected_windows" / "stride=1" / f"date={KEYS[0]}").iterdir()
            if p.name.endswith(".tmp")
        ]
        assert temporaries and all(t.startswith(".") for t in temporaries)  # a half-written file is there
        assert any((store.base / ".writers").iterdir())
        # ... but the *.parquet globs and pyarrow's discovery skip every hidden and temporary file
        files = [
            f
            for (f,) in con.sql(
                f"SELECT DISTINCT filename FROM read_parquet('{base}/**/*.parquet', "
                f"filename = true, union_by_name = true)"
            ).fetchall()
        ]
        assert files and not any(hidden(f[len(base) :]) for f in files)
        assert all(f.endswith("/part-0.parquet") for f in files)
        counts = dict(
            con.sql(
                f"SELECT stride, count(*) FROM read_parquet('{glob(store, 'projected_windows')}', "
                f"hive_partitioning = true) GROUP BY stride"
            ).fetchall()
        )
        assert counts == expected  # the old, complete file is what is read
        for asset in ("features", "projected_windows"):
            dataset = ds.dataset(f"{base}/{asset}", format="parquet", partitioning="hive")
            assert not any(hidden(f[len(base) :]) for f in dataset.files)
        assert ds.dataset(f"{base}/projected_windows", format="parquet", partitioning="hive").count_rows() == sum(
            expected.values()
        )
        raise RuntimeError("abandoned")  # the writer is aborted: the temporary file goes
    assert not [p for p in (store.base / "projected_windows").rglob("*.tmp")]
    assert (
        dict(
            con.sql(
                f"SELECT stride, count(*) FROM read_parquet('{glob(store, 'projected_windows')}', "
                f"hive_partitioning = true) GROUP BY stride"
            ).fetchall()
        )
        == expected
    )
