"""Identifier validation and quoting, and the one parameterised query per window.

Nothing user-supplied reaches SQL unvalidated: identifiers must match the engine's
rules and are quoted; values (the window bounds) are always query parameters.
"""

from __future__ import annotations

import re

# BigQuery: column names are letters, digits, underscores, not starting with a digit, <= 300 chars.
# (BigQuery's "flexible column names" allow more; we accept the portable subset and say so.)
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
# project ids: 6-30 chars of lowercase letters, digits, hyphens (plus optional "domain:" prefix);
# dataset ids: letters, digits, underscores, <= 1024; table ids: letters, digits, underscores, hyphens, <= 1024.
_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.\-]*[a-z0-9]:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE = re.compile(r"^[A-Za-z0-9_\-]{1,1024}$")
_DUCKDB_TABLE_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class IdentifierError(ValueError):
    """A table or column name that breaks the engine's identifier rules."""


def check_column(name: str) -> str:
    if not isinstance(name, str) or not _COLUMN.match(name):
        raise IdentifierError(
            f"column name {name!r} is not a valid identifier: use letters, digits and underscores, "
            "not starting with a digit, at most 300 characters"
        )
    return name


def quote_column(name: str) -> str:
    """Validated, quoted column identifier (backticks work in BigQuery, double quotes in DuckDB: see callers)."""
    return f"`{check_column(name)}`"


def parse_bigquery_table(table: str) -> tuple[str, str, str]:
    """'project.dataset.table' -> its three validated parts."""
    parts = table.split(".") if isinstance(table, str) else []
    if len(parts) != 3:
        raise IdentifierError(f"BigQuery table {table!r} must be written as 'project.dataset.table'")
    project, dataset, name = parts
    if not _PROJECT.match(project):
        raise IdentifierError(
            f"BigQuery project id {project!r} in table {table!r} is not valid "
            "(6-30 lowercase letters, digits or hyphens, starting with a letter)"
        )
    if not _DATASET.match(dataset):
        raise IdentifierError(
            f"BigQuery dataset {dataset!r} in table {table!r} is not valid (letters, digits, underscores)"
        )
    if not _TABLE.match(name):
        raise IdentifierError(
            f"BigQuery table name {name!r} in table {table!r} is not valid (letters, digits, underscores, hyphens)"
        )
    return project, dataset, name


def order_by_sql(order_by: list[str], timestamp_column: str, quote) -> str:
    """``ORDER BY`` items: every key but the timestamp ``NULLS LAST`` (``entity NULLS LAST, ts``).

    Written out because the engines differ: BigQuery sorts NULLs first by default, DuckDB
    last; pandas puts NaN last. The timestamp needs no clause: the window's
    ``ts >= start`` filter leaves no NULL timestamp. ``quote`` validates and quotes a column.
    """
    return ", ".join(quote(c) if c == timestamp_column else f"{quote(c)} NULLS LAST" for c in order_by)


def bigquery_window_query(table: str, columns: list[str], timestamp_column: str, order_by: list[str]) -> str:
    """SELECT only ``columns`` for ``@start <= ts < @end`` ordered by (entity NULLS LAST, ts); bounds are query
    parameters."""
    project, dataset, name = parse_bigquery_table(table)
    select = ", ".join(f"`{check_column(c)}`" for c in columns)
    ts = check_column(timestamp_column)
    order = order_by_sql(order_by, ts, quote_column)
    return (
        f"SELECT {select} FROM `{project}.{dataset}.{name}` WHERE `{ts}` >= @start AND `{ts}` < @end ORDER BY {order}"
    )


def duckdb_table(table: str) -> str:
    """'name' or 'schema.name' -> validated, double-quoted DuckDB identifier."""
    parts = table.split(".") if isinstance(table, str) else []
    if not 1 <= len(parts) <= 2 or not all(_DUCKDB_TABLE_PART.match(p) for p in parts):
        raise IdentifierError(f"DuckDB table {table!r} must be 'name' or 'schema.name' of letters, digits, underscores")
    return ".".join(f'"{p}"' for p in parts)


def duckdb_window_query(table: str, columns: list[str], timestamp_column: str, order_by: list[str]) -> str:
    """SELECT only ``columns`` for ``? <= ts < ?`` (two positional parameters), ordered by (entity NULLS LAST, ts)."""
    select = ", ".join(f'"{check_column(c)}"' for c in columns)
    ts = check_column(timestamp_column)
    order = order_by_sql(order_by, ts, lambda c: f'"{check_column(c)}"')
    return f'SELECT {select} FROM {duckdb_table(table)} WHERE "{ts}" >= ? AND "{ts}" < ? ORDER BY {order}'
