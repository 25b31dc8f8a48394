"""Dagster's SQLite instance storage, with its event-log engines kept open between events.

Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine, opens a new SQLite connection
and compiles its INSERT statements afresh for every event it stores (twice for asset events: the
run's own database and the cross-run index), milliseconds an event (measured: docs/benchmarks.md,
where the time goes). ``PooledSqliteStorage`` is Dagster's ``DagsterSqliteStorage``
with two changes: each database file keeps its engine (a small connection pool, so compiled statements
are cached too) for as long as it is among the ``MAX_OPEN_SHARDS`` most recently used, and a batch of
one run's asset events (``store_event_batch``) is written in one transaction per database. The files,
schema and queries are Dagster's.

The ``dagster.yaml`` that ``emberharmony_assets.main`` writes into a new ``DAGSTER_HOME`` selects it
(docs/demo.md, the instance's ``dagster.yaml``); remove that block to go back to Dagster's default, the
files are the same. For production, use Postgres (``storage: postgres:``), which pools its connections
anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as db

from .dagster_private import (
    ASSET_EVENTS,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    DagsterSqliteStorage,
    SqliteEventLogStorage,
    SqliteRunStorage,
    SqliteScheduleStorage,
    db_result,
    event_logs_directory,
    runs_directory,
    schedule_directory,
)

# database files (one per run, plus the index) whose engines stay open; older ones are disposed
MAX_OPEN_SHARDS = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that keeps one engine per database file (LRU of ``MAX_OPEN_SHARDS``)."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        super().__init__(base_dir, inst_data=inst_data)

    def _engine(self, shard: str) -> db.engine.Engine:
        """The engine of ``shard``'s database file; called with ``self._db_lock`` held."""
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        # pool_size=1: one thread at a time holds _db_lock; the overflow covers Dagster's schema
        # set-up, which opens a second connection inside the first
        engine = db.create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,
            max_overflow=4,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > MAX_OPEN_SHARDS:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        with self._db_lock, self._engine(shard).connect() as conn, conn.begin():
            yield conn

    def store_event_batch(self, events) -> None:
        """What ``store_event`` does for each event, in one transaction per database for the whole batch.
        Dagster hands a step's asset materialisations over a partition range here as one batch when
        ``DAGSTER_EVENT_BATCH_SIZE`` > 0 (the main job sets it); any other mix goes event by event."""
        if (
            not events
            or len({event.run_id for event in events}) != 1
            or not all(event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS for event in events)
        ):
            for event in events:
                self.store_event(event)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        with self.index_transaction() as conn:  # mirrored in the cross-run index, as store_event does
            for event, statement in zip(events, statements, strict=True):
                with db_result(conn, statement) as result:
                    event_id = result.inserted_primary_key[0]
                self._store_asset_event_tags(conn, [event], [event_id])
                self._store_asset_event(conn, event, event_id)

    def _dispose_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        # Dagster's wipe deletes the files: close our connections to them first
        self._dispose_engines()
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """``DagsterSqliteStorage`` (runs, event log, schedules in ``base_dir``) with the pooled event log."""

    def __init__(self, base_dir: str, inst_data=None):
        # DagsterSqliteStorage.__init__ with the pooled event log (not Dagster's, built and then replaced)
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
