"""Empty days anywhere in the range (issue 21: one empty day stopped the whole pipeline with
``pyarrow.lib.ArrowInvalid: Invalid null value`` in features_and_windows).

A day without rows is a weekend in a business-day series, a sensor outage, a holiday. Each test writes a
real DuckDB file, materialises every asset in one Dagster run over daily partitions, and holds the run to:

* no window lost or invented: an entity's series simply continues across the empty day, so the windows are
  those of each entity's whole series (``emberharmony_core.windowing``: starts at rows 0, s, 2s, ..., a
  window belongs to the day of its last row, windows mixing splits dropped), compared with an independent
  pandas / NumPy (``sliding_window_view``) / scikit-learn reference (``tests/assets/test_random_tables.py``:
  ``expect`` and ``check_case``, also the features, the per-day PCA statistics, the models and projections);
* the empty day's own figures say 0 (its own materialisation's metadata, and the range's per-partition table);
* the empty day's Parquet files have real column types, the same as a day with rows (``raw_chunk``,
  ``split_data``, ``cyclical_features``, ``features``, the ``stride_windows`` index, ``projected_windows``),
  so the days read back as one dataset;
* a range with no rows at all fails naming the table and range, not with an Arrow error.

The real series: vega_datasets' bundled ``ohlc`` (CBOE VIX daily, June-July 2009, business days only,
44 rows), re-dated by whole weeks so its first Monday is 2026-01-05: the range 2026-01-01 .. 2026-03-06
starts with 4 empty days and has every weekend and the July 3 holiday (2026-02-06) empty.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance
from vega_datasets import local_data

from tests.assets.test_random_tables import (
    FIRST,
    Case,
    check_case,
    expect,
    resources_for,
    run_graph,
    temporary_files,
    write_table,
)
from tests.conftest import materialized_metadata

DAYS = [d.strftime("%Y-%m-%d") for d in pd.date_range(FIRST, periods=7, freq="D")]  # Thursday .. Wednesday
SENSORS = ["sensor_00", "sensor_01", "sensor_05", "sensor_07"]  # train, train, validation, test
SETTINGS = {
    "window_size": 3,
    "strides": [1, 2],
    "n_components": 3,
    "dtype": "float64",
    "rows_per_chunk": 5,
    "on_duplicate": "error",
    "max_categories": 50,
}
# (asset, sub-folder) of every day's Parquet files; the strides' folders are added per stride
DAY_FILES = [("raw_chunk", ()), ("split_data", ()), ("cyclical_features", ()), ("features", ())]


def sensor_table(empty=(), absent=None, seed=0) -> pd.DataFrame:
    """4 sensors, 4 readings a day (about every 6 hours, jittered) over ``DAYS``, two float features and a
    categorical; no rows on the ``empty`` days, and none of sensor ``s`` on the days ``absent[s]``."""
    rng = np.random.default_rng(seed)
    rows = []
    for sensor in SENSORS:
        for day in DAYS:
            if day in empty or day in (absent or {}).get(sensor, ()):
                continue
            hours = np.array([0, 6, 12, 18]) + rng.integers(0, 6, size=4)
            for hour, minute in zip(hours, rng.integers(0, 60, size=4), strict=True):
                rows.append(
                    {
                        "sensor": sensor,
                        "ts": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=int(hour), minutes=int(minute)),
                        "temp": rng.normal(20, 5),
                        "load": rng.gamma(2.0, 3.0),
                        "color": str(rng.choice(["red", "green", "blue"])),
                    }
                )
    return pd.DataFrame(rows).sample(frac=1, random_state=seed).reset_index(drop=True)  # stored in no order


def sensor_case(frame: pd.DataFrame, days=DAYS, **settings) -> Case:
    return Case(
        index=-1,
        frame=frame,
        entity="sensor",
        features=["temp", "load"],
        categorical=["color"],
        days=list(days),
        settings={**SETTINGS, **settings},
    )


def run(case: Case, tmp_path):
    artifacts = tmp_path / "artifacts"
    resources = resources_for(case, write_table(case, tmp_path / "table.duckdb"), artifacts)
    return run_graph(case, resources, DagsterInstance.ephemeral()), artifacts


def per_partition_rows(result, asset: str) -> dict[str, dict[str, str]]:
    """The range's per-partition table (markdown metadata) as {partition: {field: text}}."""
    text = materialized_metadata(result, asset)["run_per_partition"].value
    lines = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.strip().splitlines()]
    return {row[lines[0].index("partition")]: dict(zip(lines[0], row, strict=False)) for row in lines[2:]}


def day_files(artifacts, day: str, strides) -> dict[str, object]:
    files = {asset: artifacts / asset / f"date={day}" / "part-0.parquet" for asset, _ in DAY_FILES}
    for stride in strides:
        for asset in ("stride_windows", "projected_windows"):
            files[f"{asset} stride {stride}"] = (
                artifacts / asset / f"stride={stride}" / f"date={day}" / "part-0.parquet"
            )
    return files


def check_empty_days(case: Case, outcome, artifacts, empty_days, full_day) -> None:
    """What an empty day must look like: 0 in its figures, typed files like ``full_day``'s, one dataset."""
    strides = case.settings["strides"]
    for day in empty_days:
        assert outcome.figures["raw_chunk"][day]["rows"] == 0
        assert outcome.figures["stride_windows"][day]["rows"] == 0
        for stride in strides:
            assert outcome.figures["stride_windows"][day][f"windows_stride_{stride}"] == 0
            assert outcome.figures["projected_windows"][day].get(f"windows_stride_{stride}") == 0, (
                f"projected_windows' figures of the empty day {day} do not say 0 windows: "
                f"{outcome.figures['projected_windows'][day]}"
            )
        for name, path in day_files(artifacts, day, strides).items():
            schema, reference = pq.read_schema(path), pq.read_schema(day_files(artifacts, full_day, strides)[name])
            untyped = [f.name for f in schema if str(f.type) == "null"]
            assert not untyped, f"{name} of the empty day {day}: columns of type null {untyped}"
            assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in reference], (
                f"{name}: the empty day {day} has {schema}, a day with rows {reference}"
            )
            assert pq.read_metadata(path).num_rows == 0
    shown = per_partition_rows(outcome.result, "raw_chunk")
    for day in empty_days:
        if day in shown:  # the table shows a range's first and last 10 days
            assert int(shown[day]["rows"]) == 0, shown[day]
    windows_shown = per_partition_rows(outcome.result, "stride_windows")
    for day in empty_days:
        if day in windows_shown:
            assert all(int(windows_shown[day][f"windows_stride_{s}"] or 0) == 0 for s in strides), windows_shown[day]
    # the days read back as one Hive-partitioned dataset, empty ones included
    for asset in ("raw_chunk", "features", "projected_windows"):
        table = ds.dataset(artifacts / asset, format="parquet", partitioning="hive").to_table()
        assert table.num_rows == sum(pq.read_metadata(p).num_rows for p in (artifacts / asset).rglob("part-0.parquet"))


def windows_across(expected, stride: int, day: str) -> int:
    """Reference windows of ``stride`` holding rows from before and after ``day`` (the series continues over it)."""
    kept = expected.windows[stride]
    return int(((kept["first_day"] < day) & (kept["day"] > day)).sum())


@pytest.mark.parametrize(
    "pattern, empty, absent",
    [
        ("first day", ["2026-01-01"], None),
        ("a middle day", ["2026-01-04"], None),
        ("last day", ["2026-01-07"], None),
        ("three days in a row", ["2026-01-03", "2026-01-04", "2026-01-05"], None),
        ("first, middle and last", ["2026-01-01", "2026-01-04", "2026-01-07"], None),
        (
            "sensors absent on some days",
            ["2026-01-05"],
            {
                "sensor_00": ["2026-01-02", "2026-01-03"],
                "sensor_05": ["2026-01-01"],
                "sensor_07": ["2026-01-06", "2026-01-07"],
            },
        ),
    ],
)
def test_empty_days_lose_and_invent_no_window(tmp_path, pattern, empty, absent):
    case = sensor_case(sensor_table(empty, absent, seed=len(pattern)))
    expected = expect(case)
    assert expected.failure is None, expected.words
    outcome, artifacts = run(case, tmp_path)
    check_case(case, expected, outcome, artifacts)  # features, windows, index, statistics, models, projections, figures
    assert not temporary_files(artifacts)
    full_day = next(d for d in DAYS if d not in empty)
    check_empty_days(case, outcome, artifacts, empty, full_day)
    inner = [d for d in empty if DAYS[0] < d < DAYS[-1]]
    if inner:  # the series continue across the empty day(s): windows hold rows from both sides
        assert windows_across(expected, 1, inner[0]) > 0, pattern
    if absent:  # an absent sensor's series continues over the days it has no rows
        assert windows_across(expected, 1, "2026-01-02") > 0


@pytest.mark.parametrize("rows", ["none at all", "only outside the range"])
def test_a_range_without_rows_fails_naming_the_table_and_range(tmp_path, rows):
    frame = sensor_table()
    if rows == "none at all":
        frame = frame.iloc[:0]
    else:  # before the partitions start and after the range
        frame = frame.assign(ts=frame["ts"] + pd.to_timedelta(np.where(frame["ts"].dt.day % 2 == 0, -10, 20), unit="D"))
    case = sensor_case(frame, days=DAYS[:3])
    assert expect(case).failure == "empty"
    outcome, artifacts = run(case, tmp_path)
    assert outcome.error is not None, "a range without rows must fail"
    assert "ArrowInvalid" not in outcome.error, outcome.error
    assert re.search(r"(?i)no (source )?rows|no train (rows|windows)", outcome.error), outcome.error
    assert case.table in outcome.error or (DAYS[0] in outcome.error and DAYS[2] in outcome.error), outcome.error
    assert not temporary_files(artifacts)


# the real business-day series -----------------------------------------------------------------------------------------

VIX_MONDAY = pd.Timestamp("2026-01-05")  # the first Monday in the partitions: 2009-06-01 moves there


def vix_case() -> Case:
    raw = local_data.ohlc()
    assert len(raw) == 44 and raw["date"].min() == pd.Timestamp("2009-06-01")
    shift = VIX_MONDAY - raw["date"].min()
    assert shift % pd.Timedelta(weeks=1) == pd.Timedelta(0), "shift by whole weeks: weekdays stay"
    frame = raw.assign(ts=(raw["date"] + shift).dt.tz_localize("UTC"), index="VIX").drop(columns="date")
    last = frame["ts"].max().strftime("%Y-%m-%d")
    days = [d.strftime("%Y-%m-%d") for d in pd.date_range(FIRST.tz_localize(None), last, freq="D")]
    return Case(
        index=-1,
        frame=frame[["index", "ts", "open", "high", "low", "close", "ret", "signal"]],
        entity="index",
        features=["open", "high", "low", "close", "ret"],
        categorical=["signal"],
        days=days,
        settings={**SETTINGS, "rows_per_chunk": 100_000},
        table="vix",
    )


def test_vix_business_days_over_daily_partitions(tmp_path):
    case = vix_case()
    assert case.days[0] == "2026-01-01" and case.days[-1] == "2026-03-06" and len(case.days) == 65
    expected = expect(case)
    assert expected.failure is None
    assert (expected.rows["split"] == "train").all()  # the key 'VIX' hashes to train: every window is fitted
    with_rows = set(expected.rows["day"])
    empty = [d for d in case.days if d not in with_rows]
    weekends = [d for d in case.days if pd.Timestamp(d).dayofweek >= 5]
    holiday = (pd.Timestamp("2009-07-03") + (VIX_MONDAY - pd.Timestamp("2009-06-01"))).strftime("%Y-%m-%d")
    assert holiday == "2026-02-06" and pd.Timestamp(holiday).day_name() == "Friday"
    assert sorted(empty) == sorted(["2026-01-01", "2026-01-02", *weekends, holiday]), empty
    assert len(empty) == 65 - 44

    outcome, artifacts = run(case, tmp_path)
    check_case(case, expected, outcome, artifacts)
    # 44 rows, window 3: stride 1 starts at rows 0..41 (42 windows), stride 2 at 0, 2, ..., 40 (21)
    assert len(expected.windows[1]) == 42 and len(expected.windows[2]) == 21
    totals = materialized_metadata(outcome.result, "stride_windows")
    assert totals["run_windows_stride_1"].value == 42 and totals["run_windows_stride_2"].value == 21
    # every Monday's first windows reach back over the weekend; the Monday after the holiday over 3 days
    assert windows_across(expected, 1, "2026-01-10") == 2  # Thu, Fri | Mon and Fri | Mon, Tue
    assert windows_across(expected, 1, holiday) == 2
    check_empty_days(case, outcome, artifacts, empty, "2026-01-05")
    monday = outcome.figures["stride_windows"]["2026-02-09"]  # the Monday after the holiday: windows from Wed, Thu
    assert monday["rows"] == 1 and monday["windows_stride_1"] == 1
