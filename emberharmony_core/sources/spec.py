"""``TableSpec``: which table and columns a source reads (no imports from the rest of the package, so the
schema checks and the readers can both use it)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    def resolved_datetime_columns(self) -> tuple[str, ...]:
        """``datetime_columns`` after ``__post_init__``: never None (the timestamp column when it was left None)."""
        assert self.datetime_columns is not None  # __post_init__ replaces None
        return self.datetime_columns

    @property
    def columns(self) -> list[str]:
        """Every column to read, each once, in a fixed order (entity, timestamp, then the rest)."""
        ordered = [
            self.entity_column,
            self.timestamp_column,
            *self.resolved_datetime_columns,
            *self.feature_columns,
            *self.categorical_columns,
            *self.extra_columns,
        ]
        return list(dict.fromkeys(c for c in ordered if c))

    @property
    def order_by(self) -> list[str]:
        return [c for c in (self.entity_column, self.timestamp_column) if c]
