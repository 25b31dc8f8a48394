"""Every name this package takes from Dagster's private modules (``dagster._core``, ``dagster_shared``), in one place.

Dagster does not promise these across releases. They were checked against the Dagster that pyproject.toml pins
(``SUPPORTED_DAGSTER``); ``tests/assets/test_dagster_private.py`` fails on any other minor version, naming this
module, so an upgrade starts here. Who uses what:

* the range-run tags: ``main`` (the main job's one run over a range), ``scale_out``, ``testing``;
* ``AssetCheckEvaluationTargetMaterializationData``: a day's own check result pointing at the day's
  materialisation (``assets._common.record_day_checks``);
* the SQLite storage classes and helpers: ``instance_storage`` (the pooled SQLite storage subclasses them);
* ``get_or_set_instance_id``: ``main`` creates the instance's telemetry id quietly.
"""

from __future__ import annotations

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.events import ASSET_EVENTS
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
)
from dagster._core.storage.sqlite_storage import (
    _event_logs_directory as event_logs_directory,
)
from dagster._core.storage.sqlite_storage import (
    _runs_directory as runs_directory,
)
from dagster._core.storage.sqlite_storage import (
    _schedule_directory as schedule_directory,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster_shared.telemetry import get_or_set_instance_id

SUPPORTED_DAGSTER = "1.13"  # the minor version these names were checked against (pyproject: dagster==1.13.*)

__all__ = [
    "ASSET_EVENTS",
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "SUPPORTED_DAGSTER",
    "AssetCheckEvaluationTargetMaterializationData",
    "DagsterSqliteStorage",
    "SqliteEventLogStorage",
    "SqliteRunStorage",
    "SqliteScheduleStorage",
    "db_result",
    "event_logs_directory",
    "get_or_set_instance_id",
    "runs_directory",
    "schedule_directory",
]
