"""The whole graph on real public data (vega_datasets' bundled NOAA series), against an independent reference.

Each test writes a real series into a DuckDB file, materialises every asset in one Dagster run over
daily partitions, and compares the artifacts with a reference computed on the whole series with
pandas, NumPy and scikit-learn alone (no ``Windower``, no ``PCAStats``): cyclical features from
pandas' calendar fields, a median imputer and standard scaler fitted on the train rows, windows from
``sliding_window_view`` over each entity's series, scikit-learn's full PCA on the train windows.

The series are re-dated into the partition range (``emberharmony_assets.partitions``: 2026-01-01
onwards, fixed at import) by a whole number of weeks, so weekdays, hours and every step between rows
stay as recorded; only the year moves.

* ``seattle-weather``: one reading a day (daily partitions: every window reaches back 4 partitions).
* ``seattle-temps`` + ``sf-temps``: hourly, with the real missing hour of the 2010 spring clock change
  and a 28-hour stretch removed from Seattle, under ``max_gap: 90min``.
* ``seattle-temps`` alone, no entity column: the split key is the partition date, or the ISO week.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler
from vega_datasets import local_data

from emberharmony_assets import testing
from emberharmony_assets.assets.windows import load_model
from emberharmony_assets.resources import PipelineSettings
from emberharmony_assets.testing import materialize_days
from emberharmony_core.features.split import assign_split
from emberharmony_core.features.split_blocks import split_block_keys
from emberharmony_core.layout import load_stride_windows
from emberharmony_core.store import ArtifactStore
from tests.conftest import materialized_metadata

FIRST = pd.Timestamp("2026-01-01", tz="UTC")  # the first partition: windows start from it
W, STRIDES, K = 5, (1, 3, 5), 4


# data -----------------------------------------------------------------------------------------------------------------


def redate(times: pd.Series, first_day: str) -> pd.Series:
    """``times`` (naive, as recorded) moved so ``first_day`` becomes 2026-01-01 UTC, by whole weeks."""
    shift = FIRST.tz_localize(None) - pd.Timestamp(first_day)
    assert shift % pd.Timedelta(weeks=1) == pd.Timedelta(0), "shift by whole weeks: weekdays stay"
    return (times + shift).dt.tz_localize("UTC")


def write_table(path, table: str, frame: pd.DataFrame) -> str:
    with duckdb.connect(str(path)) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("frame", frame)
        connection.execute(f'CREATE TABLE "{table}" AS SELECT * FROM frame')
    return str(path)


def run_graph(database, artifacts, table, last_day, *, entity, features, categorical=(), extra=(), **settings):
    source = {
        "table": table,
        "timestamp_column": "ts",
        "entity_column": entity,
        "feature_columns": list(features),
        "categorical_columns": list(categorical),
        "extra_columns": list(extra),
    }
    resources = testing.resources(
        database,
        artifacts,
        source=source,
        window_size=W,
        strides=list(STRIDES),
        n_components=K,
        dtype="float64",
        **settings,
    )
    result = materialize_days(FIRST.strftime("%Y-%m-%d"), last_day, resources=resources)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    return (
        result,
        ArtifactStore(str(artifacts)),
        pd.date_range(FIRST.tz_localize(None), last_day, freq="D").strftime("%Y-%m-%d"),
    )


# the reference --------------------------------------------------------------------------------------------------------


def reference_features(frame: pd.DataFrame, numeric, categorical=()) -> pd.DataFrame:
    """The documented features of ``frame`` (which has ``ts`` and ``split``), named as the pipeline names them."""
    ts = frame["ts"].dt.tz_convert("UTC")
    phases = {
        "hour": ts.dt.hour / 24,
        "dayofweek": ts.dt.dayofweek / 7,
        "day": (ts.dt.day - 1) / ts.dt.days_in_month,
        "month": (ts.dt.month - 1) / 12,
    }
    values = frame[list(numeric)].astype(np.float64).copy()
    for name, phase in phases.items():
        values[f"ts_sin_{name}"] = np.sin(2 * np.pi * phase)
        values[f"ts_cos_{name}"] = np.cos(2 * np.pi * phase)
    train = (frame["split"] == "train").to_numpy()
    imputer = SimpleImputer(strategy="median").fit(values[train])
    scaler = StandardScaler().fit(imputer.transform(values[train]))
    out = pd.DataFrame(scaler.transform(imputer.transform(values)), columns=values.columns, index=frame.index)
    for column in categorical:
        for category in sorted(frame.loc[train, column].dropna().unique()):
            out[f"{column}_{category}"] = (frame[column] == category).astype(np.float64)
    return out


def reference_windows(frame: pd.DataFrame, features: np.ndarray, entity, stride, max_gap=None) -> pd.DataFrame:
    """Per window of each entity's whole series (starts 0, s, 2s, ...): entity, end time, split, values,
    and why it is dropped ("" kept, "mixed" splits, "gap" a step longer than max_gap)."""
    out = []
    groups = frame.groupby(entity, sort=True) if entity else [(None, frame)]
    for key, rows in groups:
        if len(rows) < W:
            continue
        where = frame.index.get_indexer(rows.index)
        starts = np.arange(0, len(rows) - W + 1, stride)
        splits = sliding_window_view(rows["split"].to_numpy(), W)[starts]
        steps = sliding_window_view(rows["ts"].diff().dt.total_seconds().fillna(0).to_numpy(), W)[starts, 1:]
        mixed = (splits != splits[:, :1]).any(axis=1)
        gap = ~mixed & (steps.max(axis=1) > pd.Timedelta(max_gap).total_seconds()) if max_gap else np.zeros_like(mixed)
        values = sliding_window_view(features[where], (W, features.shape[1]))[starts, 0].reshape(len(starts), -1)
        out.append(
            pd.DataFrame(
                {
                    "entity": key,
                    "end_time": rows["ts"].to_numpy()[starts + W - 1],
                    "split": splits[:, -1],
                    "dropped": np.where(mixed, "mixed", np.where(gap, "gap", "")),
                    "values": list(values),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def pipeline_windows(store, keys, stride) -> pd.DataFrame:
    """Every stored window of the stride (index + the expanded windows ``load_stride_windows`` rebuilds)."""
    frames = []
    for key in keys:
        windows, index = load_stride_windows(store, key, stride)
        index = index.assign(values=list(np.asarray(windows)), partition=key)
        projected = store.read_frame("projected_windows", key, f"stride={stride}")
        assert (projected["end_time"].to_numpy() == index["end_time"].to_numpy()).all()
        frames.append(index.assign(projected=list(projected.filter(like="pc_").to_numpy())))
    return pd.concat(frames, ignore_index=True)


def compare_windows(ours: pd.DataFrame, reference: pd.DataFrame, entity_column):
    """Same windows (entity, end time, split, values); ours are in partition order, the reference in entity order."""
    kept = reference[reference["dropped"] == ""].reset_index(drop=True)
    assert len(ours) == len(kept)
    if entity_column:
        ours = ours.sort_values([entity_column, "end_time"], kind="stable").reset_index(drop=True)
    entities = ours[entity_column].to_numpy() if entity_column else np.full(len(ours), None, dtype=object)
    assert list(entities) == list(kept["entity"])
    assert (ours["end_time"].to_numpy() == kept["end_time"].dt.tz_convert("UTC").to_numpy()).all()
    assert list(ours["split"]) == list(kept["split"])
    np.testing.assert_allclose(np.stack(ours["values"]), np.stack(kept["values"]), rtol=0, atol=1e-9)


def compare_model(store, stride, ours: pd.DataFrame):
    """The stride's model against scikit-learn's full PCA on the same (reference) train windows; the stored
    projections against the reference projection of every window."""
    train = np.stack(ours.loc[ours["split"] == "train", "values"])
    model = load_model(store, stride)
    reference = PCA(n_components=model.n_components_, svd_solver="full").fit(train)
    np.testing.assert_allclose(model.mean_, reference.mean_, atol=1e-9)
    np.testing.assert_allclose(model.explained_variance_, reference.explained_variance_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(model.explained_variance_ratio_, reference.explained_variance_ratio_, atol=1e-9)
    variance = reference.explained_variance_
    separated = [
        i
        for i in range(len(variance))
        if variance[i] > 1e-6 * variance[0]
        and all(abs(variance[i] - variance[j]) > 1e-6 * variance[0] for j in range(len(variance)) if j != i)
    ]
    assert separated, "no well-separated component to compare"
    cosines = np.abs(np.sum(model.components_[separated] * reference.components_[separated], axis=1))
    assert cosines.min() >= 1 - 1e-8, cosines
    signs = np.sign(np.sum(model.components_[separated] * reference.components_[separated], axis=1))
    expected = (np.stack(ours["values"]) - reference.mean_) @ reference.components_[separated].T * signs
    np.testing.assert_allclose(np.stack(ours["projected"])[:, separated], expected, atol=1e-7)
    return model


def per_partition_table(result, asset) -> pd.DataFrame:
    """The per-partition metadata table of a range run (markdown) as a frame."""
    text = materialized_metadata(result, asset)["run_per_partition"].value
    lines = [line.strip().strip("|").split("|") for line in text.strip().splitlines()]
    header = [h.strip() for h in lines[0]]
    table = pd.DataFrame([[c.strip() for c in line] for line in lines[2:]], columns=header)
    return table.set_index("partition").replace("", "0").fillna("0").apply(pd.to_numeric, errors="coerce").fillna(0)


# daily ----------------------------------------------------------------------------------------------------------------


def test_daily_series_in_daily_partitions_gets_every_window_of_its_whole_series(tmp_path):
    raw = local_data.seattle_weather()
    raw = raw[(raw["date"] >= "2012-01-05") & (raw["date"] < "2012-02-02")]  # 28 days, one row each
    frame = raw.assign(ts=redate(raw["date"], "2012-01-05"), station="seattle").drop(columns="date")
    numeric, categorical = ["precipitation", "temp_max", "temp_min", "wind"], ["weather"]
    database = write_table(tmp_path / "weather.duckdb", "weather", frame)
    result, store, keys = run_graph(
        database,
        tmp_path / "artifacts",
        "weather",
        "2026-01-28",
        entity="station",
        features=numeric,
        categorical=categorical,
    )

    features = pd.concat([store.read_frame("features", key) for key in keys], ignore_index=True)
    assert len(features) == 28 and (features["split"] == assign_split(np.array(["seattle"], dtype=object))[0]).all()
    frame = frame.reset_index(drop=True).assign(split=features["split"])
    expected = reference_features(frame, numeric, categorical)
    layout = store.read_json("stride_windows", "layout")
    assert sorted(layout["feature_columns"]) == sorted(expected.columns)
    expected = expected[layout["feature_columns"]].to_numpy()
    np.testing.assert_allclose(features[layout["feature_columns"]].to_numpy(np.float64), expected, atol=1e-9)

    windows_meta = per_partition_table(result, "stride_windows")
    for stride in STRIDES:
        reference = reference_windows(frame, expected, "station", stride)
        assert len(reference) == len(range(0, 28 - W + 1, stride)) > 0  # windows exist: 24, 8, 5
        ours = pipeline_windows(store, keys, stride)
        compare_windows(ours, reference, "station")
        shown = windows_meta.index  # a range's table shows its first and last 10 partitions
        assert (
            ours.groupby("partition").size().reindex(shown, fill_value=0).tolist()
            == windows_meta[f"windows_stride_{stride}"].astype(int).tolist()
        )
        model = compare_model(store, stride, ours)
        assert model.n_samples_ == len(reference)


# hourly, with gaps ----------------------------------------------------------------------------------------------------


def test_hourly_series_with_a_missing_stretch_drops_and_counts_the_windows_spanning_gaps(tmp_path):
    frames = []
    for city, load in [("seattle", local_data.seattle_temps), ("san_francisco", local_data.sf_temps)]:
        raw = load()
        raw = raw[(raw["date"] >= "2010-03-11") & (raw["date"] < "2010-03-18")]  # a week, with the 2010 clock change
        if city == "seattle":  # a missing stretch of 28 readings (the whole of one partition among them)
            raw = raw[(raw["date"] < "2010-03-12 20:00") | (raw["date"] > "2010-03-13 23:00")]
        frames.append(raw.assign(ts=redate(raw["date"], "2010-03-11"), city=city)[["city", "ts", "temp"]])
    frame = pd.concat(frames).sort_values(["city", "ts"], kind="stable").reset_index(drop=True)
    steps = frame.groupby("city")["ts"].diff()
    assert (steps > pd.Timedelta("90min")).sum() == 3  # the clock change in both cities, the stretch in Seattle
    database = write_table(tmp_path / "temps.duckdb", "temps", frame)
    result, store, keys = run_graph(
        database, tmp_path / "artifacts", "temps", "2026-01-07", entity="city", features=["temp"], max_gap="90min"
    )

    features = pd.concat([store.read_frame("features", key) for key in keys], ignore_index=True)
    features = features.sort_values(["city", "ts"], kind="stable").reset_index(drop=True)
    assert (features["ts"].to_numpy() == frame["ts"].to_numpy()).all()
    frame = frame.assign(split=features["split"].to_numpy())
    expected = reference_features(frame, ["temp"])[store.read_json("stride_windows", "layout")["feature_columns"]]
    assert store.read_json("stride_windows", "layout")["max_gap"] == "90min"

    meta = per_partition_table(result, "stride_windows")
    later_row_day = frame.loc[steps > pd.Timedelta("90min"), "ts"].dt.strftime("%Y-%m-%d")
    assert (
        meta["gaps"].reindex(keys).astype(int).tolist()
        == later_row_day.value_counts().reindex(keys, fill_value=0).tolist()
    )
    totals = materialized_metadata(result, "stride_windows")
    assert totals["run_gaps_total"].value == 3
    for stride in STRIDES:
        reference = reference_windows(frame, expected.to_numpy(), "city", stride, max_gap="90min")
        dropped = reference[reference["dropped"] == "gap"]
        assert len(dropped) > 0 if stride == 1 else True
        assert len(dropped) == totals[f"run_gap_dropped_stride_{stride}_total"].value
        by_day = dropped["end_time"].dt.strftime("%Y-%m-%d").value_counts().reindex(keys, fill_value=0)
        assert meta[f"gap_dropped_stride_{stride}"].reindex(keys).astype(int).tolist() == by_day.tolist()
        ours = pipeline_windows(store, keys, stride)
        compare_windows(ours, reference, "city")
        compare_model(store, stride, ours)
    # W - 1 stride-1 windows span each gap, but Seattle's clock change comes 3 rows after its missing stretch
    # ends: one window spans both
    assert totals["run_gap_dropped_stride_1_total"].value == 3 * (W - 1) - 1


# no entity column -----------------------------------------------------------------------------------------------------


def test_series_without_an_entity_split_by_day_or_by_iso_week(tmp_path):
    raw = local_data.seattle_temps()
    raw = raw[(raw["date"] >= "2010-01-07") & (raw["date"] < "2010-02-16")]  # 40 days, hourly
    frame = raw.assign(ts=redate(raw["date"], "2010-01-07"))[["ts", "temp"]].reset_index(drop=True)
    # what `split_block: 7d` hashes: the ISO week's Monday
    monday = frame["ts"].dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time.dt.strftime("%Y-%m-%d")
    assert (split_block_keys(frame["ts"], "7d") == monday).all()
    database = write_table(tmp_path / "temps.duckdb", "temps", frame)
    dropped = {}
    for unit, settings, keys_of in [
        ("day", {}, frame["ts"].dt.strftime("%Y-%m-%d")),
        ("week", {"split_block": "7d"}, monday),
    ]:
        result, store, keys = run_graph(
            database, tmp_path / unit, "temps", "2026-02-09", entity=None, features=["temp"], **settings
        )
        split = assign_split(keys_of.to_numpy(dtype=object))
        features = pd.concat([store.read_frame("features", key) for key in keys], ignore_index=True)
        assert list(features["split"]) == list(split)
        reference_frame = frame.assign(split=split)
        expected = reference_features(reference_frame, ["temp"])[
            store.read_json("stride_windows", "layout")["feature_columns"]
        ]
        totals = materialized_metadata(result, "stride_windows")
        for stride in STRIDES:
            reference = reference_windows(reference_frame, expected.to_numpy(), None, stride)
            ours = pipeline_windows(store, keys, stride)
            compare_windows(ours, reference, None)
            compare_model(store, stride, ours)
            counted = totals[f"run_mixed_split_dropped_stride_{stride}_total"].value
            assert counted == (reference["dropped"] == "mixed").sum()
            dropped[(unit, stride)] = counted
    # the day split drops the windows crossing a midnight between days of different splits; the week split
    # only those crossing the Sunday midnight into the validation week of 2026-02-02 and out of it
    assert dropped[("week", 1)] == 2 * (W - 1) < dropped[("day", 1)]
    assert all(dropped[("week", s)] < dropped[("day", s)] for s in STRIDES)


# settings -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_gap": "soon"}, "max_gap must be a duration.*'soon'"),
        ({"max_gap": "-1h"}, "max_gap must be a positive duration.*'-1h'"),
        ({"split_block": "week"}, "split_block must be a duration.*'week'"),
        ({"split_block": "7d", "split_key": "sensor_id"}, "split_block .* and split_key .* are both set"),
    ],
)
def test_bad_gap_and_block_settings_fail_naming_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        PipelineSettings(**settings).validate()


def test_gap_and_block_settings_default_off():
    settings = PipelineSettings().validate()
    assert settings.max_gap is None and settings.split_block is None
    assert PipelineSettings(max_gap="2h", split_block="7d").validate().max_gap == "2h"
