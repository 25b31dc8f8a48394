"""Random tables through the asset graph, against a whole-table reference (seeded NumPy generators: Hypothesis
is not installed in the project's environment).

Table ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` (``EMBERHARMONY_RANDOM_SEED``, default 21), so
one table is re-run alone with ``EMBERHARMONY_RANDOM_CASE=i`` (a failure report names ``i`` and what the table
holds). A table has: 1-5 daily partitions from 2026-01-01 (the run's range), sometimes rows the day before the
partitions start, the day after the range and with a NULL timestamp (never read); string, integer or no entity
keys (the empty string, non-ASCII, negative and 2**62 integers among them); rows at random times, on the hour,
at 00:00:00 and 23:59:59.999999; whole empty days and entities absent on some days; a TIMESTAMPTZ or naive
TIMESTAMP column; features of SQL type DOUBLE, FLOAT, BIGINT, INTEGER, SMALLINT, BOOLEAN (and DECIMAL, which
is refused naming the column) with NULLs (some columns > 90 % or entirely NULL, some constant) and real NaN
values (not NULL); a text or integer-coded categorical with NULLs and a category that first appears late,
``max_categories`` below the vocabulary; duplicate (entity, timestamp) rows under ``on_duplicate`` error /
keep_last / mean (identical for keep_last, other feature values for mean, sometimes a categorical that
disagrees); NULL entity ids and +-inf or out-of-range values (sometimes only outside the range, where they must
not matter); ``window_size`` 1-4, strides from {1, 2, 3}, ``n_components`` 1-4, ``dtype`` float64 (3 in 4) or
float32, ``rows_per_chunk`` from 1 to 100,000, sometimes ``max_gap``.

Each table either succeeds and equals the reference computed from the whole table with pandas, NumPy and
scikit-learn (dedupe, FARM_FINGERPRINT split through ``assign_split``, pandas calendar fields, median imputer +
standard scaler + one-hot vocabulary fitted on the train rows, ``sliding_window_view`` windows over each
entity's whole series by the rule of ``emberharmony_core.windowing``, full PCA of the train windows): the
feature columns and values, the stored window index exactly (row, entity, end time, split, per day and stride),
the windows ``load_stride_windows`` rebuilds, each day's PCA statistics, the models (float64: 1e-9) and the
projections, each day's own figures; or it fails as the reference predicts, with a message naming the culprit
(the partition and the column or key, the stride without train windows, the table and range without rows),
leaving no temporary file and nothing of the refused partition. Every Parquet file has real column types (no
``null`` columns).

How the tables run, and why (measured on this 2-core machine, shared with other work): a full Dagster run
(``materialize`` of every asset over the table's range, in process, one ephemeral instance for all runs) takes
about 0.7 s for a tiny table, most of it Dagster's executor and event log (SQLAlchemy) and 0.1 s
``pca_models``' scree-plot PNG: 200 of them, with their tables and references, take about 2.5 minutes. So one
table in ``GRAPH_EVERY`` runs through Dagster, and the others through the very asset bodies (every step of
``all_assets``: their decorated functions, so every line the assets run and every core call they make), called
in the graph's dependency order with a stand-in for Dagster's context (partition keys, the selected assets, a
logger, observations collected): about 0.26 s a table. That path skips only Dagster's executor and event log,
the resources' set-up hooks (the store's writers lock; ``ingest`` validates the source and settings itself) and
the scree plot (a stub there: a picture, no computed result). ``test_random_tables`` runs
``EMBERHARMONY_RANDOM_TABLES`` tables (default 200, about 90 s here); ``test_many_random_tables`` (marker
``slow``: ``-m slow`` or ``EMBERHARMONY_SLOW=1``) runs ``EMBERHARMONY_RANDOM_TABLES_SLOW`` more (default 2,000).
Both print how many tables ran each way, and the seconds per phase.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, MaterializeResult, MetadataValue
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from emberharmony_assets import testing
from emberharmony_assets.assets import all_assets
from emberharmony_assets.checks import SPLIT_FRACTIONS
from emberharmony_core.features.split import assign_split
from emberharmony_core.layout import load_pca_stats, load_stride_windows
from emberharmony_core.store import ArtifactStore
from tests.conftest import artifact_files, failure_text

SEED = int(os.environ.get("EMBERHARMONY_RANDOM_SEED", "21"))
N_TABLES = int(os.environ.get("EMBERHARMONY_RANDOM_TABLES", "200"))
N_SLOW = int(os.environ.get("EMBERHARMONY_RANDOM_TABLES_SLOW", "2000"))
GRAPH_EVERY = 4  # table i runs through Dagster when i % GRAPH_EVERY == 0
FIRST = pd.Timestamp("2026-01-01", tz="UTC")  # the partitions' first day: every run's range starts there
TABLE = "readings"
# a statistical check (split shares near the fractions): a table of 3 keys may fail it, which is no failure
NOT_BLOCKING = {SPLIT_FRACTIONS}
LIMIT = {"float32": float(np.finfo(np.float32).max), "float64": 1.3e154}


# the tables -----------------------------------------------------------------------------------------------------------

STRING_KEYS = ["a", "b", "B", "sensor_01", "sensor_10", "sensor_2", "z z", "0", "-1", "", "é", "ä", "日本", "x" * 40]
INTEGER_KEYS = [-(2**62), -7, -1, 0, 1, 2, 10, 11, 100, 2**40, 2**62]
CATEGORIES = ["red", "green", "blue", "ultra violet", "Δ"]
CODES = [9, 10, 100, -1, 0]  # integer categories: ordered numerically (9 before 10)
FEATURE_TYPES = ["DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "BOOLEAN", "DECIMAL(18,3)"]
FEATURE_TYPE_SHARES = [0.52, 0.1, 0.1, 0.08, 0.07, 0.1, 0.03]


def feature_values(rng, kind: str, n: int, null_rate: float):
    """``n`` values for a feature column of SQL type ``kind`` (as pandas holds them), a share NULL."""
    null = rng.random(n) < null_rate
    if kind in ("BIGINT", "INTEGER", "SMALLINT"):
        values = pd.array(rng.integers(-50, 50, size=n), dtype="Int64")
    elif kind == "BOOLEAN":
        values = pd.array(rng.random(n) < 0.5, dtype="boolean")
    else:
        scale = 10 ** rng.uniform(-2, 3)
        values = rng.normal(scale * rng.uniform(-100, 100), scale, size=n)
        if kind == "FLOAT":  # values a FLOAT holds exactly
            values = values.astype(np.float32).astype(np.float64)
        values[null] = np.nan
        return values
    values[null] = pd.NA
    return values


@dataclass
class Case:
    """One random table and the settings it runs with."""

    index: int
    frame: pd.DataFrame  # the source table as written (rows outside the range and NULL timestamps included)
    entity: str | None
    features: list[str]
    categorical: list[str]
    days: list[str]  # the run's partitions, oldest first (the first is always 2026-01-01)
    settings: dict
    nan_cells: list[tuple[int, str]] = field(default_factory=list)  # (row, column) stored as a real NaN, not NULL
    sql_types: dict = field(default_factory=dict)  # column -> its type in the DuckDB table (default: from pandas)
    notes: list[str] = field(default_factory=list)  # what was planted, for the failure report
    table: str = TABLE

    def describe(self) -> str:
        return (
            f"table {self.index} (EMBERHARMONY_RANDOM_SEED={SEED} EMBERHARMONY_RANDOM_CASE={self.index}): "
            f"{len(self.frame)} rows, entity={self.entity!r}, features={self.features}, "
            f"categorical={self.categorical}, days={self.days[0]}..{self.days[-1]}, settings={self.settings}, "
            f"planted: {', '.join(self.notes) or 'nothing'}"
        )


def _times(rng, day: pd.Timestamp, n: int) -> pd.DatetimeIndex:
    """``n`` distinct times in ``day`` (microseconds: DuckDB's TIMESTAMPTZ precision)."""
    kind = rng.choice(["random", "hourly", "edges"])
    if kind == "hourly" and n <= 24:
        offsets = (int(rng.integers(0, 25 - n)) + np.arange(n)) * 3_600_000_000
    else:
        offsets = rng.choice(86_400_000_000, size=n, replace=False)
        if kind == "edges":  # the day's first and last representable instants
            offsets[0] = 0
            if n > 1:
                offsets[-1] = 86_400_000_000 - 1
    return day + pd.to_timedelta(np.unique(offsets), unit="us")


def make_case(index: int, seed: int = SEED) -> Case:  # noqa: C901
    rng = np.random.default_rng([seed, index])
    n_days = int(rng.integers(1, 6))
    days = pd.date_range(FIRST, periods=n_days, freq="D")
    mode = rng.choice(["str", "int", "none"], p=[0.45, 0.4, 0.15])
    entity = None if mode == "none" else str(rng.choice(["station", "Device", "id"]))
    pool = STRING_KEYS if mode == "str" else INTEGER_KEYS
    keys = (
        [None]
        if mode == "none"
        else list(rng.choice(np.array(pool, dtype=object), size=int(rng.integers(1, 6)), replace=False))
    )
    notes = []
    # the days rows may fall on: the range, sometimes the day after it and the day before the partitions start
    outside = []
    if rng.random() < 0.3:
        outside.append(days[-1] + pd.Timedelta(days=1))
    if rng.random() < 0.2:
        outside.append(FIRST - pd.Timedelta(days=1))
    empty_days = rng.random(n_days) < 0.2
    if empty_days.any():
        notes.append(f"empty days {[str(d.date()) for d in days[empty_days]]}")
    pieces = []
    for key in keys:
        absent = rng.random(n_days) < 0.25
        if absent.any() and not empty_days.all():
            notes.append(f"{key!r} absent on {int(absent.sum())} day(s)")
        for d, day in enumerate(list(days) + outside):
            if d < n_days and (empty_days[d] or absent[d]):
                continue
            n = int(rng.choice([1, 2, 3, 4, 6, 9, 12]))
            pieces.append(pd.DataFrame({"key": [key] * n, "ts": _times(rng, day, n)}))
    base = (
        pd.concat(pieces, ignore_index=True)
        if pieces
        else pd.DataFrame({"key": pd.Series(dtype=object), "ts": pd.Series(dtype="datetime64[ns, UTC]")})
    )
    n = len(base)
    frame = pd.DataFrame({"ts": base["ts"]})
    if entity is not None:
        frame.insert(
            0, entity, pd.array(base["key"].tolist(), dtype="Int64") if mode == "int" else base["key"].astype(object)
        )

    # numeric features of a drawn SQL type, NULLs at a drawn rate, sometimes constant; DECIMAL is refused
    sql_types = {"ts": "TIMESTAMPTZ" if rng.random() < 0.75 else "TIMESTAMP"}  # TIMESTAMP: naive, read as UTC
    if entity is not None:
        sql_types[entity] = "BIGINT" if mode == "int" else "VARCHAR"
    features = []
    for j in range(int(rng.integers(1, 4))):
        name = ["temp", "load", "level"][j]
        kind = str(rng.choice(FEATURE_TYPES, p=FEATURE_TYPE_SHARES))
        null_rate = float(rng.choice([0, 0, 0.1, 0.4, 0.93, 1.0]))
        frame[name] = feature_values(rng, kind, n, null_rate)
        if kind == "DOUBLE" and n and rng.random() < 0.1:
            frame[name] = np.where(
                frame[name].isna(), np.nan, frame[name].dropna().iloc[0] if frame[name].notna().any() else 0.0
            )
            notes.append(f"{name} constant")
        notes.append(f"{name} {kind}" + (f" NULL rate {null_rate}" if null_rate else ""))
        sql_types[name] = kind
        features.append(name)

    # a categorical (text, or integer codes whose order is numeric), NULLs, a category first seen late
    categorical = []
    max_categories = 50
    if rng.random() < 0.5:
        name, pool, sql = ("color", CATEGORIES, "VARCHAR") if rng.random() < 0.7 else ("code", CODES, "BIGINT")
        vocabulary = list(rng.choice(np.array(pool, dtype=object), size=int(rng.integers(1, 5)), replace=False))
        values = rng.choice(np.array(vocabulary, dtype=object), size=n)
        late = rng.choice(np.array([c for c in pool if c not in vocabulary], dtype=object))
        late_day = days[int(rng.integers(0, n_days))]
        values[(base["ts"] >= late_day).to_numpy() & (rng.random(n) < 0.3)] = late
        null_rate = float(rng.choice([0, 0.2, 0.95]))
        values[rng.random(n) < null_rate] = None
        frame[name] = pd.array(list(values), dtype="Int64") if sql == "BIGINT" else values
        sql_types[name] = sql
        categorical.append(name)
        notes.append(f"category {late!r} from {late_day.date()}, {name} {sql} NULL rate {null_rate}")
        if rng.random() < 0.2:
            max_categories = int(rng.integers(1, 3))

    settings = {
        "window_size": int(rng.integers(1, 5)),
        "strides": [int(s) for s in rng.choice([1, 2, 3], size=int(rng.integers(1, 4)), replace=False)],
        "n_components": int(rng.integers(1, 5)),
        "dtype": str(rng.choice(["float64", "float32"], p=[0.75, 0.25])),
        "rows_per_chunk": int(rng.choice([1, 2, 3, 7, 64, 100_000])),
        "on_duplicate": str(rng.choice(["error", "keep_last", "mean"])),
        "max_categories": max_categories,
    }
    if rng.random() < 0.15:
        settings["max_gap"] = str(rng.choice(["2h", "6h", "1d"]))

    # real NaN values (not NULL) in float columns: imputed like NULLs
    nan_cells = []
    floats = [c for c in features if sql_types[c] == "DOUBLE"]
    if floats and n and rng.random() < 0.15:
        column = str(rng.choice(floats))
        rows = rng.choice(n, size=min(n, 2), replace=False)
        nan_cells = [(int(r), column) for r in rows]
        frame.loc[rows, column] = np.nan
        notes.append(f"NaN in {column}")

    # duplicates of (entity, ts)
    if n and rng.random() < 0.3:
        picked = rng.choice(n, size=min(n, int(rng.integers(1, 4))), replace=False)
        copies = frame.iloc[np.repeat(picked, rng.integers(1, 3, size=len(picked)))].copy()
        if settings["on_duplicate"] == "mean":  # other feature values (or NULL), the same categories
            for column in features:
                copies[column] = feature_values(rng, sql_types[column], len(copies), float(rng.choice([0, 0.3])))
            if categorical and rng.random() < 0.3:
                column = categorical[0]
                other = {"red": "green", 9: 10}
                copies[column] = pd.array(
                    [other.get(v, "red" if column == "color" else 9) for v in copies[column]], dtype=frame[column].dtype
                )
                notes.append(f"a duplicate disagrees in {column}")
        frame = pd.concat([frame, copies], ignore_index=True)
        notes.append(f"{len(copies)} duplicate rows ({settings['on_duplicate']})")
    # bad rows: a NULL entity, a non-finite or out-of-range feature value (inside or outside the range)
    # bad rows: a NULL entity, a non-finite or out-of-range feature value (inside or outside the range), on rows
    # whose key is unique (which copy of a duplicate the graph keeps must not matter)
    bad_ok = "disagrees" not in " ".join(notes)  # the mean-disagreement fails at once: planted alone
    unique = ~frame.duplicated([entity, "ts"] if entity else ["ts"], keep=False).to_numpy()
    if bad_ok and entity is not None and unique.any() and rng.random() < 0.08:
        row = int(rng.choice(np.flatnonzero(unique)))
        extra = frame.iloc[[row]].copy()
        extra["ts"] = extra["ts"] + pd.Timedelta(microseconds=1)
        frame = pd.concat([frame, extra], ignore_index=True)
        frame.loc[len(frame) - 1, entity] = None
        unique = np.append(unique, False)
        notes.append(f"NULL entity on {extra['ts'].iloc[0].date()}")
    if bad_ok and floats and unique.any() and rng.random() < 0.1:
        row, column = int(rng.choice(np.flatnonzero(unique))), str(rng.choice(floats))
        value = float(rng.choice([np.inf, -np.inf, 1e39, -1e200]))
        frame.loc[row, column] = value
        nan_cells = [(r, c) for r, c in nan_cells if (r, c) != (row, column)]
        notes.append(f"{column}={value} on {frame.loc[row, 'ts'].date()}")
    if rng.random() < 0.15:  # rows without a timestamp: in no partition, never read
        extra = frame.iloc[:0].copy() if not len(frame) else frame.iloc[[0]].copy()
        if len(extra):
            extra["ts"] = pd.Series([pd.NaT], dtype="datetime64[ns, UTC]", index=extra.index)
            frame = pd.concat([frame, extra], ignore_index=True)
            notes.append("a NULL timestamp")
    order = rng.permutation(len(frame))  # the table's physical order is no order
    position = np.empty_like(order)
    position[order] = np.arange(len(frame))
    nan_cells = [(int(position[r]), c) for r, c in nan_cells]
    frame = frame.iloc[order].reset_index(drop=True)
    return Case(
        index=index,
        frame=frame,
        entity=entity,
        features=features,
        categorical=categorical,
        days=[d.strftime("%Y-%m-%d") for d in days],
        settings=settings,
        nan_cells=nan_cells,
        notes=notes,
        sql_types=sql_types,
    )


def write_table(case: Case, path) -> str:
    """The table in a DuckDB file (TIMESTAMPTZ or TIMESTAMP, BIGINT / VARCHAR keys, the features' SQL types,
    NULLs as NULL; the ``nan_cells`` as real NaN values)."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        frame = case.frame.assign(_row=np.arange(len(case.frame))) if case.nan_cells else case.frame
        connection.register("frame", frame)
        # typed as a real table would be (an all-NULL pandas column would otherwise become DuckDB's "NULL" type)
        types = {"ts": "TIMESTAMPTZ", **{c: "VARCHAR" for c in case.categorical}, "_row": "BIGINT"}
        if case.entity:
            types[case.entity] = "BIGINT" if case.frame[case.entity].dtype == "Int64" else "VARCHAR"
        types.update({c: "BIGINT" if case.frame[c].dtype == "Int64" else "DOUBLE" for c in case.features})
        types.update(case.sql_types)
        columns = ", ".join(f'CAST("{c}" AS {types[c]}) AS "{c}"' for c in frame.columns)
        connection.execute(f'CREATE TABLE "{case.table}" AS SELECT {columns} FROM frame')
        connection.unregister("frame")
        if case.nan_cells:
            for row, column in case.nan_cells:
                connection.execute(f'UPDATE "{case.table}" SET "{column}" = \'nan\'::DOUBLE WHERE _row = ?', [row])
            connection.execute(f'ALTER TABLE "{case.table}" DROP COLUMN _row')
    return str(path)


def resources_for(case: Case, database: str, artifacts) -> dict:
    source = dict(
        table=case.table,
        timestamp_column="ts",
        entity_column=case.entity,
        feature_columns=list(case.features),
        categorical_columns=list(case.categorical),
    )
    return testing.resources(database, artifacts, source=source, **case.settings)


# the reference --------------------------------------------------------------------------------------------------------


@dataclass
class Expected:
    failure: str | None = None  # None: the run succeeds; else which step fails
    words: list[str] = field(default_factory=list)  # regexes the failure's message must all match
    any_words: list[str] = field(default_factory=list)  # ... and at least one of these
    partition: str | None = None  # the partition ingest fails on: none of its files may exist
    rows: pd.DataFrame | None = None  # the rows the graph keeps (entity, ts order), with their split and day
    features: pd.DataFrame | None = None  # reference features, named as the pipeline names them
    windows: dict = field(default_factory=dict)  # stride -> kept windows (day, row, entity, end_time, split, values)
    dropped: dict = field(default_factory=dict)  # stride -> {"mixed": n, "gap": n}
    duplicates: dict = field(default_factory=dict)  # day -> (duplicate keys, extra rows)


def day_of(ts: pd.Series) -> pd.Series:
    return ts.dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")


def rows_in_range(frame: pd.DataFrame, days) -> pd.DataFrame:
    end = pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(days=1)
    return frame[frame["ts"].notna() & (frame["ts"] >= pd.Timestamp(days[0], tz="UTC")) & (frame["ts"] < end)]


def sort_rows(rows: pd.DataFrame, entity) -> pd.DataFrame:
    """(day, entity, ts) order, as the day files hold them: numeric keys numerically, strings by code point
    (= UTF-8 bytes, DuckDB's order). An entity's rows stay in time order."""
    return rows.sort_values(["day", entity, "ts"] if entity else ["day", "ts"], kind="stable").reset_index(drop=True)


def as_float(values: pd.Series) -> np.ndarray:
    """A numeric column as float64, NULL as NaN (nullable integers too)."""
    if values.dtype == object:
        values = pd.to_numeric(values, errors="coerce")
    return values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def dedupe(rows: pd.DataFrame, entity, features, on_duplicate: str) -> pd.DataFrame:
    """One row per (entity, ts): the last (the planted duplicates are identical), or under ``mean`` the first
    row with each numeric feature the mean of the group's non-NULL values (NULL when all are)."""
    keys = [entity, "ts"] if entity else ["ts"]
    if on_duplicate == "keep_last":
        return rows.drop_duplicates(keys, keep="last").reset_index(drop=True)
    group = rows.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    first = ~pd.Series(group).duplicated().to_numpy()
    out = rows[first].copy()
    for column in features:
        values = as_float(rows[column])
        means = (
            pd.Series(values)
            .groupby(group)
            .agg(lambda v: np.sort(v.dropna().to_numpy()).mean() if v.notna().any() else np.nan)
        )
        out[column] = means.loc[group[first]].to_numpy()
    return out.reset_index(drop=True)


def reference_features(  # noqa: C901
    rows: pd.DataFrame, numeric, categorical=(), *, null_threshold=0.9, max_categories=50, datetime_column="ts"
) -> tuple[pd.DataFrame, dict]:
    """The documented features of ``rows`` (which have ``ts`` and ``split``): the numeric columns and the 8
    cyclical ones imputed with the train median and standard-scaled (scikit-learn), the categoricals one-hot
    with the train vocabulary; columns whose train null share exceeds ``null_threshold`` (or all NULL) dropped.
    Returns the named features and {dropped column: why}."""
    ts = rows[datetime_column].dt.tz_convert("UTC")
    phases = {
        "hour": ts.dt.hour / 24,
        "dayofweek": ts.dt.dayofweek / 7,
        "day": (ts.dt.day - 1) / ts.dt.days_in_month,
        "month": (ts.dt.month - 1) / 12,
    }
    values = pd.DataFrame({c: as_float(rows[c]) for c in numeric}, index=rows.index)
    for name, phase in phases.items():
        values[f"{datetime_column}_sin_{name}"] = np.sin(2 * np.pi * phase.astype(np.float64))
        values[f"{datetime_column}_cos_{name}"] = np.cos(2 * np.pi * phase.astype(np.float64))
    train = (rows["split"] == "train").to_numpy()
    dropped = {}

    def too_null(column: pd.Series) -> str | None:
        n_train = int(train.sum())
        nulls = int(column[train].isna().sum())
        if nulls == n_train:
            return "all null in train"
        if nulls / n_train > null_threshold:
            return "null share"
        return None

    kept = []
    for column in values.columns:
        why = too_null(values[column])
        if why:
            dropped[column] = why
        else:
            kept.append(column)
    matrix = values[kept].to_numpy(np.float64)
    imputer = SimpleImputer(strategy="median").fit(matrix[train])
    scaler = StandardScaler().fit(imputer.transform(matrix[train]))
    out = pd.DataFrame(scaler.transform(imputer.transform(matrix)), columns=kept, index=rows.index)
    for column in categorical:
        why = too_null(rows[column])
        if why:
            dropped[column] = why
            continue
        counts = rows.loc[train, column].dropna().value_counts()
        ordered = sorted(counts.index)
        if len(ordered) > max_categories:  # the most frequent, ties to the first in sorted order; kept in sorted order
            rank = sorted(range(len(ordered)), key=lambda i: (-counts[ordered[i]], i))
            ordered = [ordered[i] for i in sorted(rank[:max_categories])]
        for category in ordered:
            out[f"{column}_{category}"] = (rows[column] == category).fillna(False).astype(np.float64).to_numpy()
    return out, dropped


def reference_windows(
    rows: pd.DataFrame, features: np.ndarray, entity, window: int, stride: int, max_gap=None
) -> pd.DataFrame:
    """Every window of each entity's whole series (rows in (day, entity, ts) order; starts 0, s, 2s, ...): the
    day and row of that day it ends on, the day of its first row, entity, end time, split, values, and ``dropped``
    ("" kept, "mixed" splits, "gap" a step longer than max_gap)."""
    day = day_of(rows["ts"])
    row_in_day = rows.groupby(day, sort=False).cumcount().to_numpy()
    gap = pd.Timedelta(max_gap) if max_gap else None
    times = rows["ts"].dt.tz_convert(None).to_numpy("datetime64[ns]")  # UTC
    out = []
    groups = rows.groupby(entity, sort=False, dropna=False).indices.values() if entity else [np.arange(len(rows))]
    for where in groups:
        where = np.sort(where)
        if len(where) < window:
            continue
        starts = np.arange(0, len(where) - window + 1, stride)
        ends = where[starts + window - 1]
        splits = sliding_window_view(rows["split"].to_numpy()[where], window)[starts]
        mixed = (splits != splits[:, :1]).any(axis=1)
        if gap is not None and window > 1:
            steps = sliding_window_view(np.diff(times[where]), window - 1)[starts]
            spans = ~mixed & (steps > gap.to_timedelta64()).any(axis=1)
        else:
            spans = np.zeros_like(mixed)
        values = sliding_window_view(features[where], (window, features.shape[1]))[starts, 0].reshape(len(starts), -1)
        out.append(
            pd.DataFrame(
                {
                    "day": day.to_numpy()[ends],
                    "row": row_in_day[ends],
                    "first_day": day.to_numpy()[where[starts]],
                    "entity": rows[entity].to_numpy()[ends] if entity else None,
                    "end_time": times[ends],
                    "split": splits[:, -1],
                    "dropped": np.where(mixed, "mixed", np.where(spans, "gap", "")),
                    "values": list(values),
                }
            )
        )
    if not out:
        return pd.DataFrame(
            {
                "day": [],
                "row": [],
                "first_day": [],
                "entity": [],
                "end_time": [],
                "split": [],
                "dropped": [],
                "values": [],
            }
        )
    return pd.concat(out, ignore_index=True).sort_values(["day", "row"], kind="stable").reset_index(drop=True)


def expect(case: Case) -> Expected:  # noqa: C901
    """What the graph must do with ``case``: the first partition whose rows it refuses, or the failure the
    whole range leads to, or every feature row, window and model."""
    settings, entity, features = case.settings, case.entity, case.features
    dtype, on_duplicate = settings["dtype"], settings["on_duplicate"]
    rows = sort_rows(rows_in_range(case.frame, case.days).assign(day=lambda f: day_of(f["ts"])), entity)
    keys = [entity, "ts"] if entity else ["ts"]
    expected = Expected()
    decimals = [c for c in features if case.sql_types.get(c, "").startswith("DECIMAL")]
    if decimals:  # refused before any row is read, naming the column
        return Expected(failure="schema", words=[re.escape(repr(decimals[0])), "not numeric"])
    # ingest refuses a partition (the first one, in day order) for its rows
    for day in case.days:
        part = rows[rows["day"] == day]
        words = []
        if entity and part[entity].isna().any():
            words += ["NULL entity", re.escape(repr(entity))]
        for column in features:
            values = as_float(part[column])
            values = values[~np.isnan(values)]
            if (~np.isfinite(values) | (np.abs(values) > LIMIT[dtype])).any():
                words += [re.escape(repr(column)), "non-finite or out-of-range"]
        valid = part[part[entity].notna()] if entity else part
        sizes = valid.groupby(keys, dropna=False).size()
        if (sizes > 1).any():
            expected.duplicates[day] = (int((sizes > 1).sum()), int((sizes - 1).sum()))
            if on_duplicate == "error":
                words += ["occur more than once"]
            elif on_duplicate == "mean" and case.categorical:
                column = case.categorical[0]
                if (valid.groupby(keys, dropna=False)[column].nunique(dropna=False) > 1).any():
                    words += [re.escape(f"disagree in column {column!r}")]
        if words:
            return Expected(failure="ingest", words=[re.escape(f"partition {day}"), *words], partition=day)
    if on_duplicate != "error":
        rows = sort_rows(dedupe(rows, entity, features, on_duplicate), entity)
    if not len(rows):
        return Expected(
            failure="empty",
            words=[r"(?i)no (source )?rows|no rows|no train"],
            any_words=[re.escape(case.table), re.escape(case.days[0]), re.escape(case.days[-1])],
        )
    split_keys = (
        rows[entity].to_numpy(np.int64)
        if entity and rows[entity].dtype == "Int64"
        else rows[entity].to_numpy(object)
        if entity
        else rows["day"].to_numpy(object)
    )
    rows["split"] = assign_split(split_keys)
    if not (rows["split"] == "train").any():
        return Expected(failure="no train rows", words=[r"(?i)train", re.escape(case.days[0])])
    named, _ = reference_features(rows, features, case.categorical, max_categories=settings["max_categories"])
    expected.rows, expected.features = rows, named
    matrix = named.to_numpy(np.float64)
    short = []
    for stride in settings["strides"]:
        windows = reference_windows(rows, matrix, entity, settings["window_size"], stride, settings.get("max_gap"))
        expected.dropped[stride] = {
            "mixed": int((windows["dropped"] == "mixed").sum()),
            "gap": int((windows["dropped"] == "gap").sum()),
        }
        kept = windows[windows["dropped"] == ""].reset_index(drop=True)
        expected.windows[stride] = kept
        if (kept["split"] == "train").sum() < 2:
            short.append(stride)
    if short:
        return Expected(failure="pca_models", words=["fewer than 2 train windows", *(rf"\b{s}\b" for s in short)])
    return expected


# running the graph ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    error: str | None  # the failure's text (with every error it was raised from), None on success
    figures: dict  # asset -> partition -> that partition's own figures
    checks: list  # (check name, passed)
    result: object = None  # the Dagster run's result (graph path)


def _values(metadata) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def run_graph(case: Case, resources: dict, instance) -> Outcome:
    """One in-process Dagster run of every asset over the case's range (one partition: a partition key)."""
    try:
        result = testing.materialize_days(
            case.days[0],
            case.days[-1] if len(case.days) > 1 else None,
            resources=resources,
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
    except Exception as exc:  # noqa: BLE001 - the failure is the outcome
        return Outcome(failure_text(exc), {}, [])
    figures: dict[str, dict[str | None, dict[str, Any]]] = {}
    for event in result.all_events:  # each partition's materialisation leads with its own figures
        if event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.materialization
            figures.setdefault(materialization.asset_key.to_user_string(), {})[materialization.partition] = _values(
                materialization.metadata
            )
    checks = [(c.check_name, c.passed) for c in result.get_asset_check_evaluations()]
    return Outcome(None if result.success else "run did not succeed", figures, checks, result)


class BodyContext:
    """What the asset bodies use of Dagster's context: the run's partition keys, the selected assets, a
    logger, and ``add_asset_metadata`` (each partition's metadata, collected as ``(asset, partition, metadata)``)."""

    def __init__(self, keys, assets_def, events):
        self.partition_keys = list(keys)
        self.selected_asset_keys = set(assets_def.keys)
        self.log = logging.getLogger("emberharmony.random_tables")
        self._events = events

    def add_asset_metadata(self, metadata, asset_key=None, partition_key=None) -> None:
        self._events.append((str(asset_key), partition_key, metadata))

    # each day's check evaluation (``record_day_checks``) looks up the day's materialisation in the event log,
    # which this path has none of (a stand-in that finds nothing), and is then dropped
    run_id = "asset-bodies"

    class instance:  # noqa: N801 - stands in for the DagsterInstance attribute
        @staticmethod
        def fetch_materializations(*_args, **_kwargs):
            return type("Records", (), {"records": []})()

    def log_event(self, event) -> None:
        pass


def graph_order(assets) -> list:
    """The asset definitions (steps) in dependency order, as a run executes them (a step's dependency on its
    own earlier partitions, or between its own assets, is no edge)."""
    produced = {key: a for a in assets for key in a.keys}
    after = {
        id(a): {id(produced[k]) for k in a.dependency_keys if k in produced and produced[k] is not a} for a in assets
    }
    ordered: list = []
    done: set[int] = set()
    while len(ordered) < len(assets):
        ready = [a for a in assets if id(a) not in done and after[id(a)] <= done]
        assert ready, "the asset graph has a cycle between steps"
        ordered.append(ready[0])
        done.add(id(ready[0]))
    return ordered


def run_bodies(case: Case, resources: dict) -> Outcome:
    """The asset bodies in graph order, as a run would call them (see the module docstring)."""
    events: list[tuple[str, str | None, Any]] = []  # (asset, partition, metadata)
    checks: list[tuple[str | None, bool]] = []  # (check name, passed)
    try:
        for assets_def in graph_order(all_assets):
            body = assets_def.op.compute_fn.decorated_fn
            arguments = {p: resources[p] for p in inspect.signature(body).parameters if p != "context"}
            result = body(BodyContext(case.days, assets_def, events), **arguments)
            for item in list(result) if inspect.isgenerator(result) else [result]:
                assert isinstance(item, MaterializeResult), item  # what every asset body returns or yields
                checks += [(c.check_name, c.passed) for c in (item.check_results or [])]
                blocking = [c for c in (item.check_results or []) if not c.passed and c.check_name not in NOT_BLOCKING]
                if blocking:  # Dagster would not run what depends on it
                    return Outcome(None, {}, checks)
    except Exception as exc:  # noqa: BLE001 - the failure is the outcome
        return Outcome(failure_text(exc), {}, checks)
    figures: dict[str, dict[str | None, dict[str, Any]]] = {}
    for asset, partition, metadata in events:
        figures.setdefault(asset, {})[partition] = _values(metadata)
    return Outcome(None, figures, checks)


# comparing ------------------------------------------------------------------------------------------------------------


def temporary_files(artifacts) -> list[str]:
    """The store's temporary files (``.<name>.<uuid>.tmp``) anywhere under ``artifacts``."""
    return sorted(
        str(p) for p in artifacts.rglob("*") if p.is_file() and re.fullmatch(r"\..+\.[0-9a-f]{32}\.tmp", p.name)
    )


def null_typed_columns(artifacts) -> dict[str, list[str]]:
    """Parquet files under ``artifacts`` with columns of Arrow type ``null`` (no real type)."""
    out = {}
    for path in artifacts.rglob("*.parquet"):
        if path.name.startswith("."):
            continue
        nulls = [f.name for f in pq.read_schema(path) if pa.types.is_null(f.type)]
        if nulls:
            out[str(path.relative_to(artifacts))] = nulls
    return out


def tolerances(dtype: str) -> dict:
    if dtype == "float64":
        return {"values": 1e-9, "mean": 1e-9, "ratio": 1e-9, "variance": 1e-7, "cosine": 1e-8, "projection": 1e-7}
    return {"values": 5e-5, "mean": 5e-5, "ratio": 2e-5, "variance": 1e-4, "cosine": 1e-5, "projection": 1e-3}


def compare_windows(store: ArtifactStore, case: Case, expected: Expected, layout: dict) -> dict[int, pd.DataFrame]:
    """The stored index and the rebuilt windows of every day and stride against the reference; returns the
    pipeline's windows per stride (with their values) for the model comparison."""
    tol = tolerances(case.settings["dtype"])
    entity = case.entity or "entity"
    ours = {}
    for stride in case.settings["strides"]:
        reference = expected.windows[stride]
        frames = []
        for day in case.days:
            stored = store.read_frame("stride_windows", day, f"stride={stride}")
            windows, index = load_stride_windows(store, day, stride)
            assert len(index) == len(stored) and (index["row"].to_numpy() == stored["row"].to_numpy()).all(), day
            frames.append(stored.assign(day=day, values=list(np.asarray(windows, dtype=np.float64))))
        ours[stride] = pd.concat(frames, ignore_index=True)
        got = ours[stride]
        where = f"stride {stride}"
        assert len(got) == len(reference), f"{where}: {len(got)} windows stored, {len(reference)} in the reference"
        assert list(got["day"]) == list(reference["day"]), where
        assert got["row"].tolist() == reference["row"].tolist(), where
        assert (
            pd.to_datetime(got["end_time"], utc=True).dt.tz_convert(None).to_numpy("datetime64[ns]")
            == reference["end_time"].to_numpy("datetime64[ns]")
        ).all(), where
        assert got["split"].tolist() == reference["split"].tolist(), where
        if case.entity:
            assert [str(v) for v in got[entity]] == [str(v) for v in reference["entity"]], where
        if len(got):
            np.testing.assert_allclose(
                np.stack(got["values"]),
                np.stack(reference["values"]),
                rtol=tol["values"],
                atol=tol["values"],
                err_msg=where,
            )
    return ours


def compare_models(store: ArtifactStore, case: Case, ours: dict[int, pd.DataFrame]) -> None:
    """Each stride's model against scikit-learn's full PCA of the reference train windows (float64); the
    stored projections against the reference projection, on the well-separated components."""
    from emberharmony_assets.assets.windows import load_model

    tol = tolerances(case.settings["dtype"])
    for day in case.days:  # each day's statistics: count, mean and scatter of its train windows
        stats = load_pca_stats(store, day)
        for stride, windows in ours.items():
            train = windows[(windows["day"] == day) & (windows["split"] == "train")]
            assert stats[stride].n_samples == len(train), (day, stride, stats[stride].n_samples, len(train))
            if len(train):
                values = np.stack(train["values"])
                centred = values - values.mean(axis=0)
                scale = max(1.0, float(np.abs(centred).max()) ** 2 * len(values))
                np.testing.assert_allclose(stats[stride].mean, values.mean(axis=0), atol=tol["mean"], err_msg=day)
                np.testing.assert_allclose(
                    stats[stride].scatter, centred.T @ centred, atol=tol["variance"] * scale, err_msg=day
                )
    for stride, windows in ours.items():
        train = np.stack(windows.loc[windows["split"] == "train", "values"])
        model = load_model(store, stride)
        k = min(case.settings["n_components"], train.shape[0], train.shape[1])
        assert model.n_components_ == k and model.n_samples_ == len(train), stride
        reference = PCA(n_components=k, svd_solver="full").fit(train)
        scale = max(1.0, float(reference.explained_variance_[0]))
        np.testing.assert_allclose(model.mean_, reference.mean_, atol=tol["mean"])
        np.testing.assert_allclose(
            model.explained_variance_, reference.explained_variance_, rtol=tol["variance"], atol=tol["variance"] * scale
        )
        np.testing.assert_allclose(
            model.explained_variance_ratio_, reference.explained_variance_ratio_, atol=tol["ratio"]
        )
        # compare the components that are well separated from every other eigenvalue (the dropped ones too)
        variance = np.append(PCA(svd_solver="full").fit(train).explained_variance_, 0.0)
        gap = 1e-6 if case.settings["dtype"] == "float64" else 1e-3
        separated = [
            i
            for i in range(k)
            if variance[i] > gap * scale
            and all(abs(variance[i] - variance[j]) > gap * scale for j in range(len(variance)) if j != i)
        ]
        if not separated:
            continue
        cosines = np.sum(model.components_[separated] * reference.components_[separated], axis=1)
        assert np.abs(cosines).min() >= 1 - tol["cosine"], (stride, cosines)
        expected = (
            (np.stack(windows["values"]) - reference.mean_) @ reference.components_[separated].T * np.sign(cosines)
        )
        projected = pd.concat(
            [store.read_frame("projected_windows", day, f"stride={stride}") for day in case.days], ignore_index=True
        )
        assert (projected["end_time"].to_numpy() == windows["end_time"].to_numpy()).all()
        pcs = projected[[f"pc_{i + 1}" for i in range(k)]].to_numpy(np.float64)
        np.testing.assert_allclose(pcs[:, separated], expected, atol=tol["projection"] * max(1.0, np.sqrt(scale)))


def compare_figures(case: Case, expected: Expected, figures: dict) -> None:
    """Each day's own figures: rows read (after duplicates), windows per stride, duplicates counted."""
    assert expected.rows is not None  # a reference that succeeds has its rows
    rows_per_day = expected.rows.groupby("day").size()
    for day in case.days:
        ingested = figures.get("raw_chunk", {}).get(day)
        assert ingested is not None, f"no figures of raw_chunk for {day}: {sorted(figures)}"
        assert ingested["rows"] == int(rows_per_day.get(day, 0)), (day, ingested)
        if day in expected.duplicates and case.settings["on_duplicate"] != "error":
            assert ingested.get("duplicate_keys") == expected.duplicates[day][0], (day, ingested)
        windows = figures["stride_windows"][day]
        assert windows["rows"] == int(rows_per_day.get(day, 0)), (day, windows)
        projected = figures["projected_windows"][day]
        for stride, kept in expected.windows.items():
            count = int((kept["day"] == day).sum())
            assert windows[f"windows_stride_{stride}"] == count, (day, stride, windows)
            # a day without rows may leave its projected figures out: 0 (tests/assets/test_empty_days.py wants them)
            assert projected.get(f"windows_stride_{stride}", 0) == count, (day, stride, projected)


def check_case(case: Case, expected: Expected, outcome: Outcome, artifacts) -> None:
    """Every assertion about one table's run."""
    leftovers = temporary_files(artifacts)
    assert not leftovers, f"temporary files left: {leftovers}"
    nulls = null_typed_columns(artifacts)
    assert not nulls, f"Parquet columns without a real type: {nulls}"
    if expected.failure is not None:
        assert outcome.error is not None, (
            f"expected a failure ({expected.failure}: {expected.words}), the run succeeded"
        )
        message = outcome.error
        assert "ArrowInvalid" not in message, message
        for word in expected.words:
            assert re.search(word, message), f"{word!r} not in the failure's message: {message}"
        if expected.any_words:
            assert any(re.search(w, message) for w in expected.any_words), (
                f"none of {expected.any_words} in the failure's message: {message}"
            )
        if expected.partition is not None:  # nothing of the refused partition; those before it are complete
            refused = [f for f in artifact_files(artifacts) if expected.partition in f]
            assert not refused, f"files of the refused partition {expected.partition} were kept: {refused}"
            for day in case.days[: case.days.index(expected.partition)]:
                assert pq.read_metadata(artifacts / "raw_chunk" / f"date={day}" / "part-0.parquet").num_rows >= 0
        return
    assert outcome.error is None, f"expected success, the run failed: {outcome.error}"
    assert expected.rows is not None and expected.features is not None  # a reference that succeeds has both
    blocking = [name for name, passed in outcome.checks if not passed and name not in NOT_BLOCKING]
    assert not blocking, f"checks failed: {blocking}"
    store = ArtifactStore(str(artifacts))
    layout = store.read_json("stride_windows", "layout")
    assert sorted(layout["feature_columns"]) == sorted(expected.features.columns), (
        f"features {sorted(layout['feature_columns'])} != reference {sorted(expected.features.columns)}"
    )
    features = pd.concat([store.read_frame("features", day) for day in case.days], ignore_index=True)
    assert len(features) == len(expected.rows)
    assert list(features["split"]) == list(expected.rows["split"])
    tol = tolerances(case.settings["dtype"])
    np.testing.assert_allclose(
        features[layout["feature_columns"]].to_numpy(np.float64),
        expected.features[layout["feature_columns"]].to_numpy(),
        rtol=tol["values"],
        atol=tol["values"],
    )
    # windows are made from the features in the layout's column order
    matrix = expected.features[layout["feature_columns"]].to_numpy(np.float64)
    for stride in case.settings["strides"]:
        reordered = reference_windows(
            expected.rows, matrix, case.entity, case.settings["window_size"], stride, case.settings.get("max_gap")
        )
        expected.windows[stride] = reordered[reordered["dropped"] == ""].reset_index(drop=True)
    ours = compare_windows(store, case, expected, layout)
    compare_models(store, case, ours)
    compare_figures(case, expected, outcome.figures)


# the tests ------------------------------------------------------------------------------------------------------------


class Ran(TypedDict):
    """What ``run_tables`` did: tables run each way, failures, the cases and their expected outcomes, seconds."""

    graph: int
    bodies: int
    failures: list[str]
    cases: list[Case]
    outcomes: list[str | None]
    phases: dict[str, float]
    seconds: float


def run_tables(indexes, tmp_path, monkeypatch) -> Ran:
    """Run and check the tables ``indexes``: how many went each way, the seconds, the failures, and what the
    tables held (for the coverage check)."""
    import emberharmony_assets.assets.windows as windows_module

    real_plot = windows_module.scree_plot_metadata
    stub = lambda ratios: MetadataValue.md("(not drawn in this test)")  # noqa: E731
    instance = DagsterInstance.ephemeral()
    started = time.perf_counter()
    ran: Ran = {
        "graph": 0,
        "bodies": 0,
        "failures": [],
        "cases": [],
        "outcomes": [],
        "phases": dict.fromkeys(["table", "reference", "graph", "bodies", "checks"], 0.0),
        "seconds": 0.0,
    }

    def lap(phase: str, since: float) -> float:
        now = time.perf_counter()
        ran["phases"][phase] += now - since
        return now

    for index in indexes:
        clock = time.perf_counter()
        case = make_case(index)
        folder = tmp_path / f"table_{index}"
        folder.mkdir()
        artifacts = folder / "artifacts"
        resources = resources_for(case, write_table(case, folder / "table.duckdb"), artifacts)
        ran["cases"].append(case)
        clock = lap("table", clock)
        try:
            expected = expect(case)
        except Exception as exc:  # noqa: BLE001 - a broken reference is reported like a mismatch
            ran["failures"].append(f"{case.describe()}\n  the reference failed: {exc!r}")
            continue
        ran["outcomes"].append(expected.failure)
        clock = lap("reference", clock)
        way: Literal["graph", "bodies"] = "graph" if index % GRAPH_EVERY == 0 else "bodies"
        monkeypatch.setattr(windows_module, "scree_plot_metadata", real_plot if way == "graph" else stub)
        outcome = run_graph(case, resources, instance) if way == "graph" else run_bodies(case, resources)
        ran[way] += 1
        clock = lap(way, clock)
        try:
            check_case(case, expected, outcome, artifacts)
        except Exception as exc:  # noqa: BLE001 - every table is checked; the failures are reported together
            where = "".join(traceback.format_tb(exc.__traceback__, limit=-1)).strip().splitlines()[0]
            ran["failures"].append(f"{case.describe()} [{way}]\n  {where}\n  {type(exc).__name__}: {str(exc)[:1500]}")
        lap("checks", clock)
    ran["seconds"] = time.perf_counter() - started
    return ran


def report(ran: Ran) -> None:
    total, failures = ran["graph"] + ran["bodies"], ran["failures"]
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in ran["phases"].items())
    print(
        f"\nrandom tables: {total} ({ran['graph']} through Dagster, {ran['bodies']} through the asset bodies) in "
        f"{ran['seconds']:.1f} s ({phases}); {len(failures)} failed"
    )
    summary = "\n".join(f"  {f.splitlines()[0].split(' (')[0]}: {f.splitlines()[-1].strip()[:160]}" for f in failures)
    assert not failures, f"{len(failures)} of {total} tables failed:\n{summary}\nthe first ones in full:\n" + "\n".join(
        failures[:8]
    )


def check_coverage(cases: list[Case], outcomes: list) -> None:
    """The generator really drew the cases the module docstring lists."""
    notes = " | ".join(n for c in cases for n in c.notes)
    for planted in [
        "empty days",
        "absent on",
        "NULL rate 1.0",
        "NULL rate 0.93",
        "constant",
        "NaN in",
        "category",
        "(error)",
        "(keep_last)",
        "(mean)",
        "disagrees",
        "NULL entity",
        "inf",
        "1e+39",
        "NULL timestamp",
        *FEATURE_TYPES,
        "code BIGINT",
        "color VARCHAR",
    ]:
        assert planted in notes, planted
    assert {c.entity is None for c in cases} == {True, False}
    assert any(c.entity and c.frame[c.entity].dtype == object for c in cases)
    assert any(c.entity and c.frame[c.entity].dtype == "Int64" for c in cases)
    assert {c.settings["rows_per_chunk"] for c in cases} == {1, 2, 3, 7, 64, 100_000}
    assert {c.settings["dtype"] for c in cases} == {"float32", "float64"}
    assert {len(c.days) for c in cases} == {1, 2, 3, 4, 5}
    assert any("max_gap" in c.settings for c in cases) and any(c.settings["max_categories"] < 3 for c in cases)
    assert {c.sql_types["ts"] for c in cases} == {"TIMESTAMP", "TIMESTAMPTZ"}
    for kind in [None, "ingest", "pca_models", "empty", "schema"]:
        assert kind in outcomes, kind


def test_random_tables(tmp_path, monkeypatch):
    if os.environ.get("EMBERHARMONY_RANDOM_CASE"):  # re-run chosen tables: EMBERHARMONY_RANDOM_CASE=17,40
        report(run_tables([int(i) for i in os.environ["EMBERHARMONY_RANDOM_CASE"].split(",")], tmp_path, monkeypatch))
        return
    ran = run_tables(range(N_TABLES), tmp_path, monkeypatch)
    if N_TABLES >= 200:
        check_coverage(ran["cases"], ran["outcomes"])
    report(ran)


@pytest.mark.slow
def test_many_random_tables(tmp_path, monkeypatch, request):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("EMBERHARMONY_SLOW"):
        pytest.skip("slow: run with -m slow or EMBERHARMONY_SLOW=1")
    report(run_tables(range(N_TABLES, N_TABLES + N_SLOW), tmp_path, monkeypatch))
