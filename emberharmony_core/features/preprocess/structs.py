"""STRUCT flattening: ``{col}_{field}`` columns, as ``pd.json_normalize(...).add_prefix``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from .config import PreprocessError, is_arrow_struct


def _arrow_struct_frame(series: pd.Series, prefix: str) -> pd.DataFrame:
    import pyarrow as pa

    array = pa.array(series) if not hasattr(series, "array") else pa.array(series.array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    out: dict[str, pd.Series] = {}

    def walk(arr, name):
        if pa.types.is_struct(arr.type):
            # flatten(): each child sliced like its parent (a chunk is often a slice) and null where the parent is
            for f, child in zip(arr.type, arr.flatten(), strict=True):
                walk(child, f"{name}.{f.name}" if name else f.name)
        else:
            out[name] = arr.to_pandas()

    walk(array, "")
    frame = pd.DataFrame(out)  # positional: the Arrow children have a fresh index, the series may not
    frame.index = series.index
    return frame.add_prefix(prefix)


def _records_frame(records: list, prefix: str) -> pd.DataFrame:
    """dict rows -> columns, as ``pd.json_normalize(records).add_prefix(prefix)``.

    Through Arrow (a struct array, built in C: much faster than json_normalize) when every
    field holds one type; json_normalize otherwise (mixed types in a field).
    """
    import pyarrow as pa

    try:
        array = pa.array(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pd.json_normalize(records).add_prefix(prefix)
    if not pa.types.is_struct(array.type) or any(pa.types.is_null(f.type) for f in array.type):
        return pd.json_normalize(records).add_prefix(prefix)
    return _arrow_struct_frame(pd.Series(pd.arrays.ArrowExtensionArray(array)), prefix)


def flatten_struct_columns(
    frame: pd.DataFrame, struct_columns: Iterable[str], sep: str = "_"
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Replace each STRUCT column by its fields: ``{col}_{field}``, nested ``{col}_{a}.{b}``.

    The names and values equal ``pd.json_normalize(df[col].tolist()).add_prefix(f"{col}_")``
    (null / non-dict rows count as empty dicts, so all their fields are null). The
    flattened columns take the struct column's position. Returns the new frame and,
    per struct column, the sorted list of its fields (empty when the partition holds
    no non-null struct value: no evidence about the fields).
    """
    wanted = set(struct_columns)
    struct_columns = [c for c in frame.columns if c in wanted]  # in the frame's order
    if not struct_columns:
        return frame, {}
    fields: dict[str, list[str]] = {}
    replaced: dict[str, pd.DataFrame] = {}  # struct column -> its field columns
    for col in struct_columns:
        series = frame[col]
        prefix = f"{col}{sep}"
        if is_arrow_struct(series.dtype):
            has_values = bool(series.notna().any())
            # no struct value in the chunk: no field columns, as for dict rows (all-null fields would be typed
            # here but not there, and a chunk's column types must not depend on how the column arrived)
            flat = _arrow_struct_frame(series, prefix) if has_values else pd.DataFrame(index=series.index)
        else:
            records = [v if isinstance(v, Mapping) else {} for v in series.tolist()]
            has_values = any(records)
            flat = _records_frame(records, prefix) if has_values else pd.DataFrame(index=range(len(series)))
            flat.index = series.index
        fields[col] = sorted(c[len(prefix) :] for c in flat.columns) if has_values else []
        clash = [c for c in flat.columns if c in frame.columns and c != col]
        if clash:
            raise PreprocessError(f"flattening struct column {col!r} creates {clash}, which already exist in the frame")
        replaced[col] = flat
    if frame.columns.has_duplicates:  # names cannot key a dict: slices of the frame around the struct columns
        pieces, position = [], 0
        for index, col in enumerate(frame.columns):
            if col in replaced:
                pieces += [frame.iloc[:, position:index], replaced[col]]
                position = index + 1
        return pd.concat([*pieces, frame.iloc[:, position:]], axis=1), fields
    # the frame's columns in order, each struct column replaced by its fields, none copied (pd.concat of
    # slices copies them all; measured: docs/benchmarks.md, per 100,000-row chunk)
    columns = {}
    for col in frame.columns:
        columns.update({c: replaced[col][c] for c in replaced[col].columns} if col in replaced else {col: frame[col]})
    return pd.DataFrame(columns, index=frame.index, copy=False), fields
