"""The demo table as written: ids, the STRUCT and categoricals made in SQL from each sensor's number."""

from __future__ import annotations

import duckdb

from emberharmony_core.demo import FEATURES, SITES, DemoConfig, write_demo_table


def test_demo_table_columns_follow_each_sensor_number(tmp_path):
    config = DemoConfig(entities=10_001, days=1, cadence_minutes=240)  # ids past sensor_9999 keep every digit
    database = str(tmp_path / "demo.duckdb")
    assert write_demo_table(database, config) == config.rows == 60_006
    with duckdb.connect(database, read_only=True) as connection:
        columns = [row[0] for row in connection.execute(f"DESCRIBE {config.table}").fetchall()]
        assert columns == ["sensor_id", "ts", *FEATURES, "site", "status", "maintenance", "meta", "load_next_hour"]
        rows = connection.execute(
            f"SELECT sensor_id, site, meta.firmware, meta.rack, count(*) FROM {config.table} "
            f"GROUP BY ALL ORDER BY sensor_id"
        ).fetchall()
        statuses = {row[0] for row in connection.execute(f"SELECT DISTINCT status FROM {config.table}").fetchall()}
    assert len(rows) == config.entities
    expected = sorted(
        (f"sensor_{e:04d}", SITES[e % len(SITES)], f"v{1 + e % 3}.{e % 5}", e % 8, 6) for e in range(config.entities)
    )
    assert rows == expected
    assert statuses == {"ok", "warn", "fault"}
