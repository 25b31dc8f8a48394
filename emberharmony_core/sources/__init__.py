"""Table readers: the embedded DuckDB default and BigQuery, behind one face (``base.TableReader``)."""

from .base import DEFAULT_ROWS_PER_CHUNK, TableReader, TableSpec, WindowRead, WindowStream, validate_columns
from .schema import SchemaError, validate_schema

__all__ = [
    "DEFAULT_ROWS_PER_CHUNK",
    "SchemaError",
    "TableReader",
    "TableSpec",
    "WindowRead",
    "WindowStream",
    "validate_columns",
    "validate_schema",
]
