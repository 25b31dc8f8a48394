"""Realistic demo data for the embedded default: sensor readings in a DuckDB table.

``entities`` sensors across a few sites, one reading every ``cadence_minutes``
over ``days`` days from ``start``; eight numeric features with daily and weekly
seasonality, per-sensor offsets, drift, noise and about 2% missing values; a
categorical ``site``, a categorical ``status``, a boolean ``maintenance``, a
STRUCT ``meta`` (firmware, rack) and a numeric target ``load_next_hour``.
Rows are generated and inserted one day at a time, so memory stays at one day.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

FEATURES = ("temperature", "humidity", "pressure", "load", "vibration", "current", "voltage", "flow")
SITES = ("north", "south", "east", "west")
STATUSES = ("ok", "ok", "ok", "ok", "warn", "fault")


@dataclass(frozen=True)
class DemoConfig:
    entities: int = 64
    days: int = 90
    cadence_minutes: int = 30
    start: str = "2026-01-01"
    missing_share: float = 0.02
    seed: int = 7
    table: str = "sensor_readings"

    @property
    def rows(self) -> int:
        return self.entities * self.days * (24 * 60 // self.cadence_minutes)


_COLUMNS_SQL = (
    "sensor_id VARCHAR, ts TIMESTAMPTZ, "
    + ", ".join(f"{name} DOUBLE" for name in FEATURES)
    + ", site VARCHAR, status VARCHAR, maintenance BOOLEAN, "
    "meta STRUCT(firmware VARCHAR, rack INTEGER), load_next_hour DOUBLE"
)


def _day_frame(config: DemoConfig, day: int, rng: np.random.Generator) -> pd.DataFrame:
    steps = 24 * 60 // config.cadence_minutes
    start = pd.Timestamp(config.start, tz="UTC") + pd.Timedelta(days=day)
    times = start + pd.to_timedelta(np.arange(steps) * config.cadence_minutes, unit="min")
    entity = np.repeat(np.arange(config.entities), steps)
    ts = np.tile(times.values, config.entities)
    hours = np.tile((times.hour + times.minute / 60.0).to_numpy(), config.entities)
    weekday = np.tile(times.dayofweek.to_numpy(), config.entities)
    base_rng = np.random.default_rng(config.seed)  # per-sensor constants, identical every day
    offsets = base_rng.normal(0.0, 1.0, size=(config.entities, len(FEATURES)))
    daily = np.sin(2 * np.pi * hours / 24.0)
    weekly = np.where(weekday >= 5, -1.0, 0.4)
    drift = (day + hours / 24.0) / max(config.days, 1)
    n = entity.size
    common = rng.normal(size=n)  # a shared latent factor makes features correlated
    columns = {}
    for k, name in enumerate(FEATURES):
        amplitude = 1.0 + 0.5 * k
        signal = (
            offsets[entity, k] * 2.0
            + amplitude * daily * np.cos(k)
            + 0.8 * weekly * (k % 3)
            + 0.6 * common * (1 + k % 2)
            + 0.3 * drift * k
            + rng.normal(scale=0.4, size=n)
        )
        signal = 10.0 * (k + 1) + signal
        signal[rng.random(n) < config.missing_share] = np.nan
        columns[name] = signal
    # the sensor number, not its id: _DAY_SELECT makes sensor_id and meta from it, so no Python string or
    # dict is made per row (what that saved: docs/benchmarks.md, peak memory)
    frame = pd.DataFrame({"sensor": entity, "ts": ts, **columns})
    frame["site"] = pd.Categorical.from_codes(entity % len(SITES), SITES)
    names = list(dict.fromkeys(STATUSES))  # STATUSES repeats "ok": its weight
    frame["status"] = pd.Categorical.from_codes(
        np.array([names.index(v) for v in STATUSES])[rng.integers(0, len(STATUSES), size=n)], names
    )
    frame["maintenance"] = rng.random(n) < 0.01
    frame["load_next_hour"] = np.roll(columns["load"], -1)
    return frame


# sensor_{e:04d}, and meta {firmware v{1 + e % 3}.{e % 5}, rack e % 8}, from the sensor number e
_DAY_SELECT = (
    "SELECT printf('sensor_%04d', sensor) AS sensor_id, ts, " + ", ".join(FEATURES) + ", site::VARCHAR, "
    "status::VARCHAR, maintenance, {'firmware': printf('v%d.%d', 1 + sensor % 3, sensor % 5), "
    "'rack': (sensor % 8)::INTEGER} AS meta, load_next_hour FROM day_frame"
)


def _count(connection: duckdb.DuckDBPyConnection, query: str, parameters: list[object] | None = None) -> int:
    """The one value of a ``SELECT count(*)`` query."""
    row = connection.execute(query, parameters).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns exactly one row
    return row[0]


def write_demo_table(database: str | os.PathLike, config: DemoConfig = DemoConfig(), *, replace: bool = False) -> int:
    """Create ``config.table`` in ``database`` (a DuckDB file) unless it exists; returns its row count."""
    os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    # DuckDB would take 80% of RAM for the inserts; a day in pandas is the memory that matters
    with duckdb.connect(str(database), config={"memory_limit": "256MB"}) as connection:
        connection.execute("SET TimeZone = 'UTC'")  # naive demo times are UTC, whatever the machine's zone
        exists = _count(
            connection, "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [config.table]
        )
        if exists and not replace:
            return _count(connection, f'SELECT count(*) FROM "{config.table}"')
        staging = f"{config.table}__staging"
        connection.execute(f'DROP TABLE IF EXISTS "{staging}"')
        connection.execute(f'CREATE TABLE "{staging}" ({_COLUMNS_SQL})')
        rng = np.random.default_rng(config.seed + 1)
        for day in range(config.days):
            day_frame = _day_frame(config, day, rng)  # noqa: F841 (read by DuckDB's replacement scan)
            connection.execute(f'INSERT INTO "{staging}" {_DAY_SELECT}')
        # swap in whole: a crash above leaves the old table (or none), never a half-written one
        connection.execute("BEGIN")
        connection.execute(f'DROP TABLE IF EXISTS "{config.table}"')
        connection.execute(f'ALTER TABLE "{staging}" RENAME TO "{config.table}"')
        connection.execute("COMMIT")
        return _count(connection, f'SELECT count(*) FROM "{config.table}"')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="data/demo.duckdb")
    parser.add_argument("--entities", type=int, default=DemoConfig.entities)
    parser.add_argument("--days", type=int, default=DemoConfig.days)
    parser.add_argument("--cadence-minutes", type=int, default=DemoConfig.cadence_minutes)
    parser.add_argument("--start", default=DemoConfig.start)
    parser.add_argument("--replace", action="store_true")
    args = parser.parse_args(argv)
    config = DemoConfig(entities=args.entities, days=args.days, cadence_minutes=args.cadence_minutes, start=args.start)
    rows = write_demo_table(args.database, config, replace=args.replace)
    print(f"{args.database}: table {config.table} holds {rows:,} rows")


if __name__ == "__main__":
    main()
