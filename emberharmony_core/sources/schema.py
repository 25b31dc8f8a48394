"""Does the table fit the configuration? One check of the schema against the source columns and the
pipeline settings, run before anything reads rows or writes an artifact.

``validate_schema(spec, column_types, dialect=..., **settings)`` takes the table's column types as
the reader reports them (DuckDB ``information_schema.columns.data_type``, BigQuery
``SchemaField.field_type``), the ``TableSpec`` and the settings that name columns, and raises ONE
``SchemaError`` (a ``ValueError``) listing every problem:

* a configured column the table lacks -- the source's columns, ``split_key``, ``target_column``,
  ``force_categorical_columns``, ``drop_columns`` -- with a "did you mean" when a name is close;
* a column the settings need in the rows that the source does not read (``split_key``,
  ``target_column``, ``force_categorical_columns``): add it to the source's ``extra_columns``;
* a feature column that is not numeric (integers, floats, booleans): named with its type and the
  cast to use, or the role it belongs to. DECIMAL / NUMERIC (and DuckDB's HUGEINT) count as not
  numeric: they arrive as Python decimals, which the preprocessor would one-hot encode as text;
* a timestamp column that is not a timestamp (DuckDB: TIMESTAMP [WITH TIME ZONE], TIMESTAMP_S/MS/NS,
  DATE; BigQuery: TIMESTAMP -- the window query compares it with TIMESTAMP parameters, which
  BigQuery does not coerce DATETIME or DATE to), and a cyclical ``datetime_columns`` entry that is
  not a TIMESTAMP, DATETIME or DATE;
* a nested column (STRUCT, LIST, MAP...) where a scalar is needed (entity, categorical, split key,
  target);
* ``max_categories < 1``.

Columns derived on the way may be named by ``drop_columns`` / ``target_column`` /
``force_categorical_columns``: STRUCT fields flattened as ``{column}_{field}``, the cyclical
``{column}_{sin,cos}_...`` columns and ``split``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence

from ..names import CYCLICAL_SUFFIXES
from .spec import TableSpec

DIALECTS = ("duckdb", "bigquery")
SPLIT_COLUMN = "split"
_LISTED_COLUMNS = 60  # the message lists at most this many of the table's columns


class SchemaError(ValueError):
    """The table does not fit the configuration; ``problems`` holds one line per problem."""

    def __init__(self, table: str, problems: Sequence[str], column_types: Mapping[str, str]):
        self.table = table
        self.problems = list(problems)
        self.column_types = dict(column_types)
        listed = [f"{name} {kind}" for name, kind in list(column_types.items())[:_LISTED_COLUMNS]]
        more = len(column_types) - len(listed)
        if more > 0:
            listed.append(f"... and {more} more")
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(
            f"table {table!r} does not fit the configuration ({count}):\n"
            + "".join(f"  - {problem}\n" for problem in self.problems)
            + f"its columns are: {', '.join(listed)}"
        )


# --------------------------------------------------------------------------- type kinds

_INTEGER = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "INT",
    "BIGINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "INT1",
    "INT2",
    "INT4",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "SHORT",
    "LONG",
    "BYTEINT",
}
_FLOAT = {"FLOAT", "FLOAT4", "FLOAT8", "REAL", "DOUBLE", "FLOAT64"}
_DECIMAL = {
    "DECIMAL",
    "NUMERIC",
    "BIGNUMERIC",
    "BIGDECIMAL",
    "HUGEINT",
    "UHUGEINT",
    "INT128",
    "UINT128",
    "VARINT",
    "BIGNUM",
}
_BOOLEAN = {"BOOLEAN", "BOOL", "LOGICAL"}
_STRING = {"VARCHAR", "STRING", "TEXT", "CHAR", "BPCHAR", "UUID", "ENUM"}
_TIMESTAMP = {"TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP_US"}
_NESTED = {"STRUCT", "RECORD", "MAP", "UNION", "LIST", "ARRAY", "RANGE"}


# Complexity: one branch per type family and dialect; a flat lookup.
def type_kind(type_name: str, dialect: str = "duckdb") -> str:  # noqa: C901
    """The kind of an engine type name: ``integer``, ``float``, ``decimal``, ``boolean``, ``string``,
    ``timestamp`` (an instant, or DuckDB's naive TIMESTAMP taken as UTC), ``datetime`` (BigQuery's
    wall-clock DATETIME), ``date``, ``nested`` or ``other`` (BLOB, TIME, INTERVAL, JSON...)."""
    name = str(type_name).strip().upper()
    if name.endswith("]"):  # DuckDB LIST (INTEGER[]) and ARRAY (INTEGER[3])
        return "nested"
    base = re.split(r"[\s(<]", name, maxsplit=1)[0]
    if base in _NESTED:
        return "nested"
    if base in _INTEGER:
        return "integer"
    if base in _FLOAT:
        return "float"
    if base in _DECIMAL:
        return "decimal"
    if base in _BOOLEAN:
        return "boolean"
    if base in _STRING:
        return "string"
    if base in _TIMESTAMP:
        return "timestamp"
    if base == "DATETIME":  # BigQuery: wall clock, no time zone; DuckDB reports its alias as TIMESTAMP
        return "datetime" if dialect == "bigquery" else "timestamp"
    if base == "DATE":
        return "date"
    return "other"


_NUMERIC_KINDS = ("integer", "float", "boolean")


def _quote(column: str, dialect: str) -> str:
    return f"`{column}`" if dialect == "bigquery" else f'"{column}"'


def _feature_hint(column: str, kind: str, dialect: str) -> str:
    q = _quote(column, dialect)
    double = "FLOAT64" if dialect == "bigquery" else "DOUBLE"
    if kind in ("timestamp", "datetime", "date"):
        return "list it under datetime_columns (cyclical features) instead of feature_columns"
    if kind == "nested":
        return (
            f"list it under extra_columns instead (STRUCT fields are flattened into {column}_<field> "
            "features; lists and maps are not features)"
        )
    if kind == "decimal":
        return (
            f"exact decimals arrive as Python Decimal objects and would be one-hot encoded as text: "
            f"read it as CAST({q} AS {double}) (a view over the table)"
        )
    if kind == "string":
        return (
            f"if it holds numbers, read it as CAST({q} AS {double}) (a view over the table); if it holds "
            "categories, move it to categorical_columns"
        )
    return f"read it as CAST({q} AS {double}) (a view over the table), or move it to categorical_columns"


def _timestamp_hint(column: str, kind: str, dialect: str) -> str:
    q = _quote(column, dialect)
    if dialect == "bigquery":
        if kind in ("datetime", "date"):
            return (
                f"the window query compares it with TIMESTAMP parameters, which BigQuery does not coerce "
                f"{kind.upper()} to: read it as TIMESTAMP({q}) (a view; taken as UTC)"
            )
        if kind in ("integer", "float"):
            return (
                f"if it holds epoch seconds / milliseconds, read it as TIMESTAMP_SECONDS({q}) / TIMESTAMP_MILLIS({q}) "
                "(a view)"
            )
        return f"read it as TIMESTAMP({q}) or PARSE_TIMESTAMP('<format>', {q}) (a view over the table)"
    if kind in ("integer", "float"):
        return f"if it holds epoch seconds / milliseconds, read it as to_timestamp({q}) / epoch_ms({q}) (a view)"
    return f"read it as CAST({q} AS TIMESTAMP) or strptime({q}, '<format>') (a view over the table)"


# --------------------------------------------------------------------------- names


def _struct_fields(type_name: str) -> list[str] | None:
    """Top-level field names of a DuckDB ``STRUCT(a INTEGER, "b c" VARCHAR)``; None when not parseable
    (BigQuery reports ``RECORD`` without its fields)."""
    text = str(type_name).strip()
    if not text.upper().startswith("STRUCT(") or not text.endswith(")"):
        return None
    body, fields, depth, current, quoted = text[7:-1], [], 0, "", False
    for char in body:
        if char == '"':
            quoted = not quoted
        if not quoted and char in "([<":
            depth += 1
        elif not quoted and char in ")]>":
            depth -= 1
        if not quoted and depth == 0 and char == ",":
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    names = []
    for field in fields:
        field = field.strip()
        match = re.match(r'^"((?:[^"]|"")*)"', field) or re.match(r"^(\S+)", field)
        if not match:
            return None
        names.append(match.group(1).replace('""', '"'))
    return names


def _close(name: str, candidates: Iterable[str]) -> list[str]:
    candidates = list(dict.fromkeys(candidates))
    lower = {c.lower(): c for c in candidates}
    if name.lower() in lower:
        return [lower[name.lower()]]
    return difflib.get_close_matches(name, candidates, n=2, cutoff=0.75)


class _Names:
    """Which names a setting may refer to: table columns, read columns, and columns derived from them."""

    def __init__(self, spec: TableSpec, column_types: Mapping[str, str], dialect: str):
        self.table = dict(column_types)
        self.read = [c for c in spec.columns if c in self.table]
        self.structs = {
            c: _struct_fields(self.table[c])
            for c in self.read
            if type_kind(self.table[c], dialect) == "nested" and self._is_struct(self.table[c])
        }
        self.derived = [SPLIT_COLUMN] + [f"{c}_{s}" for c in spec.resolved_datetime_columns for s in CYCLICAL_SUFFIXES]
        self.derived += [f"{c}_{f}" for c, fields in self.structs.items() for f in fields or ()]

    @staticmethod
    def _is_struct(type_name: str) -> bool:
        return str(type_name).strip().upper().startswith(("STRUCT", "RECORD"))

    def struct_field(self, name: str) -> bool:
        """``name`` is a flattened field ``{struct}_{field}`` (``{struct}_{field}.{sub}`` when nested) of a read
        STRUCT."""
        for column, fields in self.structs.items():
            prefix = f"{column}_"
            if not name.startswith(prefix):
                continue
            if fields is None:  # fields unknown (BigQuery RECORD): any field name may be there
                return True
            rest = name[len(prefix) :]
            if any(rest == f or rest.startswith(f"{f}.") for f in fields):
                return True
        return False

    def in_rows(self, name: str) -> bool:
        """The column reaches the preprocessor: read, derived, or a flattened STRUCT field."""
        return name in self.read or name in self.derived or self.struct_field(name)

    def missing(self, name: str, role: str) -> str:
        hints = _close(name, [*self.table, *self.derived])
        hint = f"; did you mean {', '.join(map(repr, hints))}?" if hints else ""
        return f"no column {name!r} ({role}){hint}"


# --------------------------------------------------------------------------- the check


# Complexity: a checklist in the module docstring's order, one if per check.
def schema_problems(  # noqa: C901
    spec: TableSpec,
    column_types: Mapping[str, str],
    *,
    dialect: str = "duckdb",
    drop_columns: Sequence[str] = (),
    target_column: str | None = None,
    split_key: str | None = None,
    force_categorical_columns: Sequence[str] = (),
    max_categories: int | None = None,
) -> list[str]:
    """Every problem of the table against the configuration, one line each (empty: it fits).

    See the module docstring for what is checked. ``column_types`` maps each column of the table
    to the engine's type name; ``dialect`` (``duckdb`` / ``bigquery``) says which types the window
    query accepts and how the casts in the messages are written."""
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    for name, value in (("drop_columns", drop_columns), ("force_categorical_columns", force_categorical_columns)):
        if isinstance(value, str):
            raise TypeError(f"{name} must be a list of column names, not the string {value!r}")
    types = dict(column_types)
    names = _Names(spec, types, dialect)
    problems: list[str] = []

    # 1. every column the source reads exists (each once, under its first role)
    roles = {spec.timestamp_column: "timestamp_column"}
    if spec.entity_column:
        roles.setdefault(spec.entity_column, "entity_column")
    for role in ("datetime_columns", "feature_columns", "categorical_columns", "extra_columns"):
        for column in getattr(spec, role):
            roles.setdefault(column, role)
    problems += [names.missing(column, role) for column, role in roles.items() if column not in types]

    def kind(column: str) -> str:
        return type_kind(types[column], dialect)

    # 2. types of what the source reads
    ts = spec.timestamp_column
    accepted = ("timestamp",) if dialect == "bigquery" else ("timestamp", "date")
    if ts in types and kind(ts) not in accepted:
        problems.append(
            f"timestamp_column {ts!r} is {types[ts]}, not "
            f"{'TIMESTAMP' if dialect == 'bigquery' else 'a TIMESTAMP or DATE'}: "
            f"{_timestamp_hint(ts, kind(ts), dialect)}"
        )
    for column in spec.resolved_datetime_columns:
        if column != ts and column in types and kind(column) not in ("timestamp", "datetime", "date"):
            problems.append(
                f"datetime_columns {column!r} is {types[column]}, not a TIMESTAMP, DATETIME or DATE: "
                f"{_timestamp_hint(column, kind(column), dialect)}"
            )
    categorical = set(spec.categorical_columns) | set(force_categorical_columns)
    for column in spec.feature_columns:
        if (
            column in types
            and column not in categorical
            and column not in spec.resolved_datetime_columns
            and kind(column) not in _NUMERIC_KINDS
        ):
            problems.append(
                f"feature_columns {column!r} is {types[column]}, not numeric: "
                f"{_feature_hint(column, kind(column), dialect)}"
            )
    scalar_roles = [
        ("entity_column", [spec.entity_column] if spec.entity_column else []),
        ("categorical_columns", spec.categorical_columns),
    ]
    for role, columns in scalar_roles:
        for column in columns:
            if column in types and kind(column) == "nested":
                problems.append(
                    f"{role} {column!r} is {types[column]}: a nested value cannot be "
                    f"{'an entity id' if role == 'entity_column' else 'a category'}; pick a scalar column "
                    f"(STRUCT fields: list the STRUCT under extra_columns)"
                )

    # 3. columns the settings name
    if split_key is not None:
        if split_key not in types:
            problems.append(names.missing(split_key, "split_key"))
        elif split_key not in spec.columns:
            problems.append(
                f"split_key {split_key!r} is a column of the table but the source does not read it: "
                "add it to the source's extra_columns"
            )
        elif kind(split_key) == "nested":
            problems.append(f"split_key {split_key!r} is {types[split_key]}: the split hashes a scalar key")
    if target_column is not None:
        if not names.in_rows(target_column):
            problems.append(_not_read(target_column, "target_column", names))
        elif target_column in types and kind(target_column) == "nested":
            problems.append(
                f"target_column {target_column!r} is {types[target_column]}: the target must be a "
                "scalar column (name a STRUCT field as <struct>_<field>)"
            )
    for column in dict.fromkeys(force_categorical_columns):
        if not names.in_rows(column):
            problems.append(_not_read(column, "force_categorical_columns", names))
        elif column in types and kind(column) == "nested":
            problems.append(
                f"force_categorical_columns {column!r} is {types[column]}: a nested value cannot be "
                "a category (name a STRUCT field as <struct>_<field>)"
            )
    for column in dict.fromkeys(drop_columns):
        if column not in types and not names.in_rows(column):
            problems.append(names.missing(column, "drop_columns"))
    if max_categories is not None and (isinstance(max_categories, bool) or max_categories < 1):
        problems.append(f"max_categories must be >= 1, got {max_categories!r}")
    return problems


def _not_read(column: str, role: str, names: _Names) -> str:
    if column in names.table:
        return (
            f"{role} {column!r} is a column of the table but the source does not read it: "
            "add it to the source's extra_columns"
        )
    return names.missing(column, role)


def validate_schema(spec: TableSpec, column_types: Mapping[str, str], *, dialect: str = "duckdb", **settings) -> None:
    """Raise ONE ``SchemaError`` (a ``ValueError``) listing every problem ``schema_problems`` finds.

    ``settings``: ``drop_columns``, ``target_column``, ``split_key``, ``force_categorical_columns``,
    ``max_categories`` (all optional)."""
    problems = schema_problems(spec, column_types, dialect=dialect, **settings)
    if problems:
        raise SchemaError(spec.table, problems, column_types)


__all__ = ["SchemaError", "schema_problems", "type_kind", "validate_schema"]
