"""What every source reads: a table, its columns, one half-open time window at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Protocol

import pandas as pd


@dataclass(frozen=True)
class TableSpec:
    """Which table and columns to read.

    ``timestamp_column`` orders rows and decides their partition; ``entity_column``
    (optional) separates independent series (windows never cross entities);
    ``feature_columns`` are the numeric inputs; ``datetime_columns`` get cyclical
    features (the timestamp column by default); ``categorical_columns`` are read
    as strings for one-hot encoding; ``extra_columns`` are read and passed along
    (targets, struct columns, keys).
    """

    table: str
    timestamp_column: str
    feature_columns: tuple[str, ...]
    entity_column: str | None = None
    datetime_columns: tuple[str, ...] | None = None
    categorical_columns: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        for name in ("feature_columns", "categorical_columns", "extra_columns"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.datetime_columns is None:
            object.__setattr__(self, "datetime_columns", (self.timestamp_column,))
        else:
            object.__setattr__(self, "datetime_columns", tuple(self.datetime_columns))
        if not self.table:
            raise ValueError("source table is empty: set `table`")
        if not self.timestamp_column:
            raise ValueError("source timestamp_column is empty: set `timestamp_column`")

    @property
    def columns(self) -> list[str]:
        """Every column to read, each once, in a fixed order (entity, timestamp, then the rest)."""
        ordered = [self.entity_column, self.timestamp_column, *self.datetime_columns, *self.feature_columns,
                   *self.categorical_columns, *self.extra_columns]
        return list(dict.fromkeys(c for c in ordered if c))

    @property
    def order_by(self) -> list[str]:
        return [c for c in (self.entity_column, self.timestamp_column) if c]


@dataclass
class WindowRead:
    """One window's rows (sorted by entity, then timestamp; timestamp as UTC) and what the read cost."""

    frame: pd.DataFrame
    metadata: dict


class TableReader(Protocol):
    spec: TableSpec

    def column_types(self) -> Mapping[str, str]:
        """The table's schema: column name -> the engine's type name."""

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """Rows with ``start <= timestamp < end`` (tz-aware UTC datetimes), only ``spec.columns``."""


def validate_columns(spec: TableSpec, column_types: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming every configured column the table does not have."""
    roles = {spec.timestamp_column: "timestamp_column"}
    if spec.entity_column:
        roles[spec.entity_column] = "entity_column"
    for role in ("datetime_columns", "feature_columns", "categorical_columns", "extra_columns"):
        for column in getattr(spec, role):
            roles.setdefault(column, role)
    lower = {c.lower(): c for c in column_types}
    missing = [f"{column!r} ({role})" for column, role in roles.items() if column not in column_types]
    if missing:
        hints = [lower[c.split("'")[1].lower()] for c in missing if c.split("'")[1].lower() in lower]
        hint = f"; did you mean {', '.join(map(repr, hints))}?" if hints else ""
        raise ValueError(
            f"table {spec.table!r} has no column {', '.join(missing)}; its columns are "
            f"{', '.join(sorted(column_types))}{hint}"
        )


def as_utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    """A tz-aware UTC timestamp (naive input is taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def normalise_frame(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Timestamp column to ``datetime64[ns, UTC]``, rows sorted by (entity, timestamp), fresh index."""
    ts = frame[spec.timestamp_column]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    frame[spec.timestamp_column] = ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return frame.sort_values(spec.order_by, kind="stable").reset_index(drop=True)
