"""The main job's work as a plain pandas + scikit-learn script: the third comparison of ``make bench-graph``.

    python -m benchmarks.script_pipeline --database PATH --out DIR [--json PATH]
        [--table T --timestamp ts --entity sensor_id --features ... --categorical ... --extra ...]
        [--window 5 --strides 1 3 5 --components 32 --fractions 0.8 0.1 0.1 --dtype float32]

What a competent data scientist would write for the same job, with no Dagster and no emberharmony
code: the **whole table in memory** (one DataFrame, then one feature matrix and, per stride, one
window matrix), and the same work as the main job on the same DuckDB table:

read       one ``SELECT`` of the columns the job uses, ``ORDER BY entity, timestamp``, into pandas;
           STRUCT columns flattened in SQL into ``{column}_{field}`` columns.
split      per split key (the entity): ``pandas.util.hash_pandas_object`` of the key, modulo 100,
           against the job's fractions (train below 80, validation below 90, test otherwise by
           default). Not the job's FARM_FINGERPRINT, so which entity lands where differs; the
           split is still per entity, so no window mixes splits here either.
cyclical   sin/cos of hour / 24, weekday / 7, (day - 1) / days in the month and (month - 1) / 12 of
           each datetime column (pandas ``.dt``), as ``emberharmony_core.features.cyclical``.
prepare    a ``ColumnTransformer`` fitted on the train rows: ``SimpleImputer(median)`` +
           ``StandardScaler`` for the numeric columns (features, booleans, numeric struct fields and
           the cyclical columns; columns null in more than ``--null-threshold`` of the train rows
           are dropped first), ``OneHotEncoder`` (train categories, at most ``--max-categories``)
           for the categorical ones (given, plus string struct fields); the target is left out.
           The result is cast to ``--dtype``.
windows    ``numpy.lib.stride_tricks.sliding_window_view`` over the feature matrix; for each stride
           ``s`` the windows of ``--window`` consecutive rows of one entity starting at rows 0, s,
           2s, ... of that entity's series (the job's rule), windows whose rows carry different
           splits dropped; each window flattened row by row.
pca        per stride ``sklearn.decomposition.PCA(n_components)`` fitted on the train windows, then
           every window transformed (scikit-learn's default solver: ``covariance_eigh`` where the
           windows outnumber their features tenfold, as on the demo and wide shapes).
write      per stride ``DIR/stride=S/part-0.parquet``: entity, end_time, split, pc_1 .. pc_k (the
           columns of the job's ``projected_windows``).

``make bench-graph`` passes every setting from ``emberharmony_assets.definitions`` (``DEMO_SOURCE``
and ``PipelineSettings(**DEMO_SETTINGS)``: ``demo_arguments``), so the script cannot drift from
the job; run alone without them, it reads them from there itself (importing Dagster, untimed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd


# ---------------------------------------------------------------------------------------------
# the settings of the job the script is compared with (not used by the script's own work)
def demo_settings() -> dict:
    """The main job's table roles and settings (``DEMO_SOURCE``, ``PipelineSettings(**DEMO_SETTINGS)``)."""
    from emberharmony_assets.definitions import DEMO_SETTINGS, DEMO_SOURCE
    from emberharmony_assets.resources import PipelineSettings

    settings = PipelineSettings(**DEMO_SETTINGS)
    unsupported = {
        name: getattr(settings, name)
        for name in ("split_key", "max_gap", "split_block", "drop_columns", "force_categorical_columns")
        if getattr(settings, name)
    }
    if unsupported:
        raise NotImplementedError(f"the script does not do what these settings ask: {unsupported}")
    return dict(
        table=DEMO_SOURCE["table"],
        timestamp=DEMO_SOURCE["timestamp_column"],
        entity=DEMO_SOURCE["entity_column"],
        features=list(DEMO_SOURCE.get("feature_columns", [])),
        categorical=list(DEMO_SOURCE.get("categorical_columns", [])),
        extra=list(DEMO_SOURCE.get("extra_columns", [])),
        datetime=list(DEMO_SOURCE.get("datetime_columns") or [DEMO_SOURCE["timestamp_column"]]),
        target=settings.target_column,
        window=settings.window_size,
        strides=list(settings.strides),
        components=settings.n_components,
        fractions=list(settings.split_fractions),
        dtype=settings.dtype,
        null_threshold=settings.null_threshold,
        max_categories=settings.max_categories,
    )


def demo_arguments() -> list[str]:
    """``demo_settings()`` as this script's command-line arguments (what ``make bench-graph`` passes)."""
    s = demo_settings()
    argv = [
        "--table",
        s["table"],
        "--timestamp",
        s["timestamp"],
        "--entity",
        s["entity"],
        "--window",
        str(s["window"]),
        "--components",
        str(s["components"]),
        "--dtype",
        s["dtype"],
        "--null-threshold",
        repr(s["null_threshold"]),
        "--max-categories",
        str(s["max_categories"]),
        "--target",
        s["target"] or "",
    ]
    for flag in ("features", "categorical", "extra", "datetime", "strides", "fractions"):
        argv += [f"--{flag}", *map(str, s[flag])]
    return argv


# ---------------------------------------------------------------------------------------------
# the script
def read_table(database: str, table: str, entity: str, timestamp: str, columns: list[str]) -> pd.DataFrame:
    """The columns, ordered by entity then time, STRUCT columns flattened to ``{column}_{field}``."""
    import duckdb

    with duckdb.connect(database, read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        types = dict(zip(con.table(table).columns, con.table(table).types, strict=True))
        select = []
        for name in dict.fromkeys([entity, timestamp, *columns]):
            kind = types[name]
            if kind.id == "struct":
                select += [f'"{name}"."{field}" AS "{name}_{field}"' for field, _ in kind.children]
            else:
                select.append(f'"{name}"')
        return con.execute(f'SELECT {", ".join(select)} FROM "{table}" ORDER BY "{entity}", "{timestamp}"').df()


def assign_splits(keys: pd.Series, fractions) -> np.ndarray:
    """0 train, 1 validation, 2 test, per key: its pandas hash modulo 100 against the cumulative fractions."""
    uniques, codes = np.unique(keys.to_numpy(), return_inverse=True)
    buckets = pd.util.hash_pandas_object(pd.Series(uniques), index=False).to_numpy() % 100
    train_below, validation_below = np.round(100 * np.cumsum(fractions))[:2]
    per_key = np.where(buckets < train_below, 0, np.where(buckets < validation_below, 1, 2)).astype(np.int8)
    return per_key[codes]


def add_cyclical(frame: pd.DataFrame, column: str) -> list[str]:
    """Adds ``{column}_sin_hour`` .. ``{column}_cos_month``; returns their names."""
    ts = frame[column].dt
    phases = {
        "hour": ts.hour / 24,
        "dayofweek": ts.dayofweek / 7,
        "day": (ts.day - 1) / ts.days_in_month,
        "month": (ts.month - 1) / 12,
    }
    names = []
    for name, phase in phases.items():
        angle = 2 * np.pi * phase.to_numpy(dtype=np.float64)
        frame[f"{column}_sin_{name}"], frame[f"{column}_cos_{name}"] = np.sin(angle), np.cos(angle)
        names += [f"{column}_sin_{name}", f"{column}_cos_{name}"]
    return names


def window_starts(entity_codes: np.ndarray, splits: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, int]:
    """First rows of the stride's windows (each entity's rows 0, s, 2s, ...; never across entities) whose
    rows all share one split, and how many windows were dropped for mixing splits."""
    n = len(entity_codes)
    first_row = np.r_[0, np.flatnonzero(entity_codes[1:] != entity_codes[:-1]) + 1]
    lengths = np.diff(np.r_[first_row, n])
    position = np.arange(n) - np.repeat(first_row, lengths)
    fits = position + window <= np.repeat(lengths, lengths)
    starts = np.flatnonzero(fits & (position % stride == 0))
    changes = np.r_[0, np.cumsum(splits[1:] != splits[:-1])]  # split changes up to each row
    mixed = changes[starts + window - 1] != changes[starts]
    return starts[~mixed], int(mixed.sum())


def run_script(
    database: str,
    out: str,
    *,
    table: str,
    timestamp: str,
    entity: str,
    features: list[str],
    categorical: list[str],
    extra: list[str],
    datetime: list[str],
    target: str | None,
    window: int,
    strides: list[int],
    components: int,
    fractions: list[float],
    dtype: str = "float32",
    null_threshold: float = 0.9,
    max_categories: int = 50,
) -> dict:
    from numpy.lib.stride_tricks import sliding_window_view
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    started = time.perf_counter()
    steps = {}
    used = [c for c in [*features, *categorical, *extra, *datetime] if c != target]
    frame = read_table(database, table, entity, timestamp, used)
    steps["read"] = time.perf_counter() - started

    mark = time.perf_counter()
    splits = assign_splits(frame[entity], fractions)
    train = splits == 0
    cyclical = [name for column in datetime for name in add_cyclical(frame, column)]
    numeric, categories = list(features), list(categorical)
    for name in frame.columns:  # extra columns (flattened structs included): booleans and numbers, strings
        if name in (entity, target, *datetime, *features, *categorical, *cyclical):
            continue
        if pd.api.types.is_bool_dtype(frame[name]) or pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = frame[name].astype("float64")
            numeric.append(name)
        elif pd.api.types.is_object_dtype(frame[name]) or pd.api.types.is_string_dtype(frame[name]):
            categories.append(name)
    numeric = [c for c in numeric if frame.loc[train, c].isna().mean() <= null_threshold] + cyclical
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", max_categories=max_categories, sparse_output=False),
                categories,
            ),
        ],
        sparse_threshold=0.0,
    )
    preprocess.fit(frame.loc[train])
    matrix = preprocess.transform(frame).astype(dtype, copy=False)
    entities, end_times = frame[entity].to_numpy(), frame[timestamp].to_numpy()
    entity_codes = pd.factorize(entities)[0]
    del frame
    steps["prepare"] = time.perf_counter() - mark

    all_windows = sliding_window_view(matrix, (window, matrix.shape[1]))[:, 0]  # (n - w + 1, w, F), a view
    split_names = np.array(["train", "validation", "test"], dtype=object)
    windows, train_windows, mixed, explained = {}, {}, {}, {}
    steps["windows"] = steps["pca"] = steps["write"] = 0.0
    for stride in strides:
        mark = time.perf_counter()
        starts, mixed[stride] = window_starts(entity_codes, splits, window, stride)
        flat = all_windows[starts].reshape(len(starts), -1)  # one copy: each window's rows, one after the other
        window_split = splits[starts]
        steps["windows"] += time.perf_counter() - mark
        mark = time.perf_counter()
        pca = PCA(n_components=components).fit(flat[window_split == 0])
        projected = pca.transform(flat)
        del flat
        steps["pca"] += time.perf_counter() - mark
        mark = time.perf_counter()
        ends = starts + window - 1
        result = pd.DataFrame(projected, columns=[f"pc_{i + 1}" for i in range(components)])
        result.insert(0, "split", split_names[window_split])
        result.insert(0, "end_time", end_times[ends])
        result.insert(0, "entity", entities[ends])
        os.makedirs(os.path.join(out, f"stride={stride}"), exist_ok=True)
        result.to_parquet(os.path.join(out, f"stride={stride}", "part-0.parquet"), index=False)
        steps["write"] += time.perf_counter() - mark
        windows[stride], train_windows[stride] = len(starts), int(np.sum(window_split == 0))
        explained[stride] = round(float(pca.explained_variance_ratio_.sum()), 6)
    return {
        "seconds": time.perf_counter() - started,
        "rows": int(len(entities)),
        "features": int(matrix.shape[1]),
        "windows": windows,
        "train_windows": train_windows,
        "mixed_split_dropped": mixed,
        "explained_variance": explained,
        "seconds_by_step": {k: round(v, 3) for k, v in steps.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.script_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="DuckDB file holding the table")
    parser.add_argument("--out", required=True, help="folder for the projections (stride=S/part-0.parquet)")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this path")
    for flag in ("table", "timestamp", "entity", "target", "dtype"):
        parser.add_argument(f"--{flag}", default=None)
    for flag in ("features", "categorical", "extra", "datetime"):
        parser.add_argument(f"--{flag}", nargs="*", default=None)
    parser.add_argument("--strides", type=int, nargs="+", default=None)
    parser.add_argument("--fractions", type=float, nargs=3, default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--components", type=int, default=None)
    parser.add_argument("--null-threshold", type=float, default=None)
    parser.add_argument("--max-categories", type=int, default=None)
    args = vars(parser.parse_args(argv))
    database, out, json_path = args.pop("database"), args.pop("out"), args.pop("json")
    if any(value is None for value in args.values()):  # run alone: the job's settings (imports Dagster)
        args = {**demo_settings(), **{k: v for k, v in args.items() if v is not None}}
    args["target"] = args["target"] or None
    result = run_script(database, out, **args)
    print(
        f"script: {result['rows']:,} rows in {result['seconds']:.2f} s ({result['rows'] / result['seconds']:,.0f} "
        f"rows/s); {result['features']} features; windows per stride {result['windows']} (train "
        f"{result['train_windows']}, mixed splits dropped {result['mixed_split_dropped']}); explained variance "
        f"{result['explained_variance']}; steps (s) {result['seconds_by_step']}"
    )
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
