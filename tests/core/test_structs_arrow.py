"""STRUCT columns flatten the same whether they arrive as Python dicts or Arrow-backed (``pd.ArrowDtype``), also
for a slice of a larger Arrow array and for a frame whose index is not 0..n-1 (train rows picked out)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from emberharmony_core.features.preprocess.structs import flatten_struct_columns
from emberharmony_core.store import frame_from_arrow


def test_arrow_struct_slice_with_a_sparse_index_flattens_like_dicts():
    table = pa.table(
        {
            "id": list(range(10)),
            "meta": pa.array(
                [{"firmware": f"v{i % 3}", "rack": i} if i != 4 else None for i in range(10)],
                type=pa.struct([("firmware", pa.string()), ("rack", pa.int64())]),
            ),
        }
    ).slice(2, 7)  # an offset into the arrays, as a chunk of a bigger batch has
    arrow_frame, dict_frame = frame_from_arrow(table), table.to_pandas()
    assert isinstance(arrow_frame["meta"].dtype, pd.ArrowDtype)
    keep = [0, 2, 3, 5]  # rows picked by a mask: the index is no longer 0..n-1
    ours = flatten_struct_columns(arrow_frame.iloc[keep], ["meta"])[0]
    reference = flatten_struct_columns(dict_frame.iloc[keep], ["meta"])[0]
    assert list(ours.index) == list(reference.index) == keep
    pd.testing.assert_frame_equal(ours, reference, check_dtype=False)
    assert ours["meta_firmware"].isna().tolist() == [False, True, False, False]  # row 4 of the table is null


def test_a_chunk_without_any_struct_value_gives_no_field_columns_either_way():
    table = pa.table({"meta": pa.array([None, None], type=pa.struct([("rack", pa.int64())]))})
    for frame in (frame_from_arrow(table), table.to_pandas()):
        flat, fields = flatten_struct_columns(frame, ["meta"])
        assert list(flat.columns) == [] and fields == {"meta": []}


def test_flattening_keeps_the_column_order_and_does_not_copy_the_other_columns():
    import numpy as np

    frame = pd.DataFrame(
        {
            "a": np.arange(5.0),
            "meta": [{"x": i, "y": f"s{i}"} for i in range(5)],
            "b": np.ones(5),
            "other": [{"z": 1}] * 5,
            "c": list("vwxyz"),
        },
        index=[10, 11, 12, 13, 14],
    )
    flat, fields = flatten_struct_columns(frame, ["other", "meta"])
    assert list(flat.columns) == ["a", "meta_x", "meta_y", "b", "other_z", "c"]
    assert fields == {"meta": ["x", "y"], "other": ["z"]} and list(flat.index) == list(frame.index)
    assert np.shares_memory(flat["a"].to_numpy(), frame["a"].to_numpy())  # a view, not a copy of every column
    # duplicate column names (possible in pandas) still flatten, by slices
    twice = pd.concat([frame[["a", "meta"]], frame[["a"]]], axis=1)
    flat_twice, _ = flatten_struct_columns(twice, ["meta"])
    assert list(flat_twice.columns) == ["a", "meta_x", "meta_y", "a"]
