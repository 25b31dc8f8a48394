"""Table readers: the embedded DuckDB default and BigQuery, behind one face (``base.TableReader``)."""

from .base import TableReader, TableSpec, WindowRead, validate_columns

__all__ = ["TableReader", "TableSpec", "WindowRead", "validate_columns"]
