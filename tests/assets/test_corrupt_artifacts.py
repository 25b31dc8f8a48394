"""Artifacts that cannot be read, or partitions that do not fit together, fail naming the culprit.

Every artifact read error (missing, empty, truncated Parquet, garbage JSON, bad npz), read through the
real graph, names the file, its asset and partition and the command that re-materialises it; nothing
of the failing run is written; the command's selection repairs it (same models as a clean run). A
column whose type, or a STRUCT whose fields, change between partitions is named with both partitions.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from emberharmony_assets import testing
from emberharmony_assets.resources import PipelineSettings
from emberharmony_assets.testing import materialize_days
from emberharmony_core.features.preprocess import PreprocessConfig, compute_partition_stats
from emberharmony_core.features.preprocess.config import ColumnTypeDriftError, StructFieldsError
from emberharmony_core.features.preprocess.stats import merge_partition_stats
from emberharmony_core.layout import load_stride_windows
from emberharmony_core.store import ArtifactMissingError, ArtifactReadError, ArtifactStore

from .conftest import PARTITIONS, make_resources

P0, P1, P2 = PARTITIONS[0], PARTITIONS[1], PARTITIONS[2]
COMMAND = "dagster asset materialize -m emberharmony_assets.definitions --select {asset}"


def command(asset: str, key: str | None = None) -> str:
    return COMMAND.format(asset=asset) + (f" --partition {key}" if key else "")


def run(resources, selection, key=None, first=None, last=None):
    """One run of ``selection``: the day ``key``, the days ``first`` .. ``last``, or (neither) no day."""
    return materialize_days(key or first, last, resources=resources, selection=selection, raise_on_error=False)


def failure_text(result) -> str:
    assert not result.success
    return " ".join(
        e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.is_failure and getattr(e.event_specific_data, "error", None)
    )


def digests(base: Path) -> dict[str, str]:
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def built(demo_database, tmp_path_factory):
    """The whole graph over two partitions, and its pca_models (the clean run's)."""
    base = tmp_path_factory.mktemp("corrupt") / "artifacts"
    resources = make_resources(demo_database, str(base))
    assert run(resources, None, first=P0, last=P1).success
    store = ArtifactStore(base)
    models = {s: store.read_arrays("pca_models", f"stride={s}") for s in resources["settings"].strides}
    return resources, base, models


@contextmanager
def damaged(path: Path, how: str):
    """``path`` emptied, truncated, overwritten with garbage or deleted for the block, then restored."""
    original = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(original[: len(original) // 2])
    elif how == "garbage":
        path.write_bytes(b"{this is not what was written" * 3)
    elif how == "wrong format":  # valid JSON, but not what the asset writes
        path.write_text('{"format": "something else", "columns": []}')
    elif how == "missing":
        path.unlink()
    try:
        yield
    finally:
        path.write_bytes(original)


def assert_names_the_culprit(text: str, path: Path, asset: str, key: str | None):
    assert str(path) in text, text
    assert (f"asset {asset}, partition {key}" if key else f"asset {asset})") in text, text
    repair = f"re-materialise {asset}" + (f" for partition {key}" if key else "")
    if "does not exist" in text:
        repair = f"materialise {asset}" + (f" for partition {key}" if key else "") + " first"
    assert f"{repair}: " in text and command(asset, key) in text, text
    if key is None:
        assert not re.search(rf"--select {asset} --partition", text)


CASES = {
    # (file, how damaged, what reads it: (selection, partition)), asset and partition the file belongs to
    "truncated parquet": (
        "features/date={P1}/part-0.parquet",
        "truncated",
        (["projected_windows"], P1),
        "features",
        P1,
    ),
    "empty parquet": (
        "cyclical_features/date={P0}/part-0.parquet",
        "empty",
        (["features"], P0),
        "cyclical_features",
        P0,
    ),
    "missing parquet": ("raw_chunk/date={P1}/part-0.parquet", "missing", (["split_data"], P1), "raw_chunk", P1),
    "garbage json": ("preprocess_stats/{P1}.json", "garbage", (["preprocessor"], None), "preprocess_stats", P1),
    "truncated statistics": (
        "pca_stats/date={P0}/part-0.parquet",
        "truncated",
        (["pca_models"], None),
        "pca_stats",
        P0,
    ),
    "garbage json, not partitioned": (
        "preprocessor/preprocessor.json",
        "garbage",
        (["features"], P1),
        "preprocessor",
        None,
    ),
    "json in another format": (
        "preprocessor/preprocessor.json",
        "wrong format",
        (["features"], P1),
        "preprocessor",
        None,
    ),
    "statistics json in another format": (
        "preprocess_stats/{P0}.json",
        "wrong format",
        (["preprocessor"], None),
        "preprocess_stats",
        P0,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_artifact_read_by_the_graph_names_file_asset_partition_and_command(built, case):
    resources, base, _ = built
    relative, how, (selection, key), asset, owner_key = CASES[case]
    path = base / relative.format(P0=P0, P1=P1)
    before = digests(base)
    with damaged(path, how):
        text = failure_text(run(resources, selection, key))
        after = digests(base)
    assert_names_the_culprit(text, path, asset, owner_key)
    if how == "empty":
        assert "it is empty (0 bytes)" in text
    if how == "missing":
        assert "does not exist" in text
    # nothing of the failing run was written, nothing half-written
    assert {k: v for k, v in after.items() if k != str(path.relative_to(base))} == {
        k: v for k, v in before.items() if k != str(path.relative_to(base))
    }
    assert not list(base.rglob("*.tmp"))


def test_a_bad_carry_names_the_previous_partition_and_its_command_repairs_it(built):
    resources, base, clean = built
    path = base / "window_carry" / f"{P0}.arrow"
    path.write_bytes(b"ARROW1\x00\x00 not really an Arrow file")  # restored by the repair below
    text = failure_text(run(resources, ["stride_windows", "pca_stats"], P1))
    assert_names_the_culprit(text, path, "window_carry", P0)
    # the repair the message names, as Dagster would run it, then the failed step again: the clean models
    asset, key = re.search(r"--select (\S+) --partition (\S+)", text).groups()
    assert (asset, key) == ("window_carry", P0)
    assert run(resources, [asset], key).success
    assert run(resources, ["stride_windows", "pca_stats"], P1).success
    assert run(resources, ["pca_models"]).success
    store = ArtifactStore(base)
    for stride, arrays in clean.items():
        again = store.read_arrays("pca_models", f"stride={stride}")
        assert arrays.keys() == again.keys()
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], again[name])


@pytest.mark.parametrize("suffix", [".npz", ".arrow"])
def test_a_carry_where_an_earlier_build_kept_it_asks_for_the_window_carry_from_the_first_partition(built, suffix):
    """A data folder of an earlier build holds stride_windows/carry/<day>.npz (or .arrow): the next day's windows
    say what to do, and the command does it."""
    resources, base, _ = built
    path = base / "window_carry" / f"{P0}.arrow"
    original = path.read_bytes()
    path.unlink()
    old = base / "stride_windows" / "carry" / f"{P0}{suffix}"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"PK\x03\x04 an old carry")
    try:
        text = failure_text(run(resources, ["stride_windows"], P1))
        assert f"the carry of {P0} is in stride_windows/carry/, where an earlier emberharmony kept it" in text
        asset, key = re.search(r"--select (\S+) --partition (\S+)", text).groups()
        assert (asset, key) == ("window_carry", P0)
        assert run(resources, [asset], key).success and path.read_bytes() == original
        assert run(resources, ["stride_windows"], P1).success
    finally:
        old.unlink()
        path.write_bytes(original)


def test_loading_a_days_windows_without_the_carry_they_were_made_from_fails_instead_of_returning_others(built):
    """``load_stride_windows`` rebuilds the windows: with the day before's carry gone it would silently make
    the first day's windows (fewer, other ones); it checks them against the stored index and says why."""
    _, base, _ = built
    store = ArtifactStore(base)
    windows, index = load_stride_windows(store, P1, 3)
    assert len(windows) == len(index) == len(store.read_frame("stride_windows", P1, "stride=3"))
    path = base / "window_carry" / f"{P0}.arrow"
    original = path.read_bytes()
    path.unlink()
    try:
        with pytest.raises(
            ArtifactReadError,
            match=rf"stride-3 windows rebuilt for partition {P1} \(\d[\d,]*\) are not the "
            r"ones its stored index names .*no window carry is stored before it",
        ):
            load_stride_windows(store, P1, 3)
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("how", ["missing", "empty", "truncated", "garbage"])
@pytest.mark.parametrize("kind", ["parquet", "npz", "json"])
def test_every_read_error_of_the_store_names_file_asset_partition_and_command(tmp_path, kind, how):
    base = tmp_path / "artifacts"
    store = ArtifactStore(base)
    if kind == "parquet":
        store.write_frame(pd.DataFrame({"x": np.arange(1000.0)}), "stride_windows", P1, "stride=3")
        path, read = (
            store.frame_path("stride_windows", P1, "stride=3"),
            lambda: store.read_frame("stride_windows", P1, "stride=3"),
        )
        asset, key = "stride_windows", P1
    elif kind == "npz":
        store.write_arrays({"a": np.arange(1000)}, "stride_windows", "carry", P1)
        path, read = (
            store.path("stride_windows", "carry", P1, suffix=".npz"),
            lambda: store.read_arrays("stride_windows", "carry", P1),
        )
        asset, key = "stride_windows", P1
    else:
        store.write_json({"a": list(range(100))}, "pca_models", "stride=3")
        path, read = (
            store.path("pca_models", "stride=3", suffix=".json"),
            lambda: store.read_json("pca_models", "stride=3"),
        )
        asset, key = "pca_models", None
    path = Path(path.path)
    with damaged(path, how), pytest.raises(ArtifactMissingError if how == "missing" else ArtifactReadError) as info:
        read()
    error = info.value
    assert (error.asset, error.partition) == (asset, key)
    text = str(error)
    assert_names_the_culprit(text, path, asset, key)
    # the store is not the default one: the command says where it is
    assert f"EMBERHARMONY_HOME={tmp_path} {command(asset, key)}" in text
    if how == "missing":
        assert isinstance(error, FileNotFoundError)


# ---------------------------------------------------------------------------------------------- schema drift
SOURCE = dict(
    table="readings",
    timestamp_column="ts",
    entity_column="sensor_id",
    feature_columns=["x"],
    extra_columns=["code", "meta"],
)


def write_day(database: Path, day: str, code_type: str, meta_fields: str, replace: bool):
    """One day of 24 sensors x 24 hours into ``readings``: ``code`` as ``code_type``, ``meta`` a STRUCT of
    ``meta_fields`` (the table is recreated when ``replace``: a source whose schema changed since)."""
    hours = pd.date_range(day, periods=24, freq="h", tz="UTC")
    frame = pd.DataFrame(
        [(f"s{e:02d}", t, float(e + i)) for e in range(24) for i, t in enumerate(hours)],
        columns=["sensor_id", "ts", "x"],
    )
    with duckdb.connect(str(database)) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        if replace:
            connection.execute("DROP TABLE IF EXISTS readings")
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS readings (sensor_id VARCHAR, ts TIMESTAMPTZ, x DOUBLE, "
            f"code {code_type}, meta STRUCT({meta_fields}))"
        )
        first = meta_fields.split()[0]
        connection.execute(
            f"INSERT INTO readings SELECT sensor_id, ts, x, CAST(x * 1.5 AS {code_type}), "
            f"struct_pack({first} := CAST(x AS INTEGER)) FROM frame"
        )
    return frame


def read_day(database: Path, day: str) -> pd.DataFrame:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(
            "SELECT * FROM readings WHERE ts >= CAST(? AS TIMESTAMPTZ) ORDER BY sensor_id, ts", [day]
        ).df()


def test_drift_between_two_partitions_of_a_duckdb_table_names_both_partitions_and_types(tmp_path):
    database = tmp_path / "drift.duckdb"
    config = PreprocessConfig(exclude_columns=("sensor_id", "ts"), split_column=None, detect_target=False)
    write_day(database, P0, "DOUBLE", "rack INTEGER", replace=True)
    first = compute_partition_stats(read_day(database, P0), config)
    write_day(database, P2, "VARCHAR", "rack INTEGER", replace=True)  # the table changed: code is text now
    second = compute_partition_stats(read_day(database, P2), config)
    with pytest.raises(ColumnTypeDriftError) as info:  # P1 agrees with P0: the message names P0 (and P2)
        merge_partition_stats(iter([(P0, first), (P1, first), (P2, second)]))
    text = str(info.value)
    assert info.value.keys == (P0, P2) and info.value.column == "code"
    assert (
        f"column 'code' changes type between partitions: numeric (float64) in partition {P0} but "
        f"categorical (object of str) in partition {P2}" in text
    )
    assert_remedies_exist(text)

    write_day(database, P1, "DOUBLE", "slot INTEGER", replace=True)  # the STRUCT's fields changed
    third = compute_partition_stats(read_day(database, P1), config)
    with pytest.raises(StructFieldsError) as info:
        merge_partition_stats([(P0, first), (P1, third)])
    text = str(info.value)
    assert info.value.keys == (P0, P1)
    assert (
        f"struct column 'meta' has different fields in partition {P0} (['rack']) and in partition {P1} (['slot'])"
        in text
        and f"only in {P0}: ['rack'], only in {P1}: ['slot']" in text
    )
    assert_remedies_exist(text)


def assert_remedies_exist(text: str):
    """Every pipeline setting the message recommends is a PipelineSettings field (no numeric_columns)."""
    recommended = set(re.findall(r"\b([a-z_]+_(?:columns|fields))=", text))
    assert recommended and recommended <= set(PipelineSettings.model_fields), recommended
    assert "numeric_columns" not in text


INGEST = ["raw_chunk", "split_data", "cyclical_features", "preprocess_stats"]


def drift_resources(database: Path, artifacts: Path, **settings) -> dict:
    """The graph on the ``readings`` table of ``write_day``, windows of 2 at stride 1."""
    return testing.resources(database, artifacts, source=SOURCE, window_size=2, strides=[1], n_components=2, **settings)


def test_a_column_changing_type_between_partitions_fails_the_preprocessor_naming_both(tmp_path):
    database = tmp_path / "drift.duckdb"
    resources, ingest = drift_resources(database, tmp_path / "artifacts"), INGEST
    write_day(database, P0, "DOUBLE", "rack INTEGER", replace=True)
    assert run(resources, ingest, P0).success
    write_day(database, P1, "VARCHAR", "rack INTEGER", replace=True)
    assert run(resources, ingest, P1).success
    before = digests(tmp_path / "artifacts")
    text = failure_text(run(resources, ["preprocessor"]))
    assert "column 'code'" in text and "numeric (float64)" in text and "categorical (object of str)" in text
    assert_remedies_exist(text)
    assert digests(tmp_path / "artifacts") == before  # no preprocessor was written
    assert f"in partition {P0} but categorical (object of str) in partition {P1}" in text


def test_a_struct_field_new_in_a_later_partition_names_the_setting_that_takes_it(tmp_path):
    """The remedy the message gives is a setting of the resources: struct_fields='union' makes the graph run, the
    field null in the partition that lacks it."""
    database = tmp_path / "fields.duckdb"
    resources, ingest = drift_resources(database, tmp_path / "artifacts"), INGEST
    write_day(database, P0, "DOUBLE", "rack INTEGER", replace=True)
    assert run(resources, ingest, P0).success
    hours = pd.date_range(P1, periods=24, freq="h", tz="UTC")
    frame = pd.DataFrame(  # noqa: F841  # read by DuckDB by name
        [(f"s{e:02d}", t, float(e + i)) for e in range(24) for i, t in enumerate(hours)],
        columns=["sensor_id", "ts", "x"],
    )
    with duckdb.connect(str(database)) as connection:  # from P1 on, meta has a second field
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute("DROP TABLE readings")
        connection.execute(
            "CREATE TABLE readings (sensor_id VARCHAR, ts TIMESTAMPTZ, x DOUBLE, code DOUBLE, "
            "meta STRUCT(rack INTEGER, slot INTEGER))"
        )
        connection.execute(
            "INSERT INTO readings SELECT sensor_id, ts, x, x * 1.5, struct_pack(rack := CAST(x AS "
            "INTEGER), slot := CAST(x AS INTEGER) % 3) FROM frame"
        )
    assert run(resources, ingest, P1).success
    text = failure_text(run(resources, ["preprocessor"]))
    assert "struct column 'meta' has different fields" in text and "struct_fields='union'" in text
    assert "PreprocessConfig" not in text
    assert_remedies_exist(text)

    union = drift_resources(database, tmp_path / "artifacts", struct_fields="union")
    assert run(union, ["preprocess_stats"], first=P0, last=P1).success  # as the message says (from the stored rows)
    assert run(
        union,
        ["preprocessor", "features", "window_tails", "window_carry", "stride_windows", "pca_stats", "pca_models"],
        first=P0,
        last=P1,
    ).success
    features = ArtifactStore(tmp_path / "artifacts").read_frame("features", P0)
    assert {"meta_rack", "meta_slot"} <= set(features.columns)  # slot: null in P0, imputed with P1's median
