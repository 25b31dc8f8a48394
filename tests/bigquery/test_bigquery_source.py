"""BigQueryTableReader against the bqemulator BigQuery emulator (REST), offline.

The rows are seeded with ``insert_rows_json`` (the emulator's JSON load jobs fail)
and read back with the parameterised window query; results are compared exactly
with the same rows built as a pandas frame.

Not exercised offline: the BigQuery Storage Read API path. bqemulator 1.4.0 does
serve the Storage Read API over gRPC, but only for stored tables: reading a query's
result table (anonymous or an explicit destination) through it answers 404 because
the emulator does not materialise query results as tables. So the tests read over
REST and check the decision between the two paths (``test_storage_api_decision``);
the Storage path itself is google-cloud-bigquery's ``to_arrow_iterable(bqstorage_client=...)``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from emberharmony_core.sources.base import TableSpec
from emberharmony_core.sources.bigquery import BigQueryTableReader
from emberharmony_core.sources.sql import IdentifierError

TABLE = "readings"


def _rows() -> list[dict]:
    """3 entities over 3 days, microsecond timestamps, NULL and NaN features, a NULL category."""
    rows = []
    cats = ["red", "green", None, "blue"]
    for e, entity in enumerate(["alpha", "beta", "gamma"]):
        for i in range(8):
            ts = pd.Timestamp("2024-03-01T00:00:00Z") + pd.Timedelta(hours=9 * i + e, microseconds=17 * i)
            f1 = None if (i + e) % 5 == 0 else float(i * 1.25 - e)
            f2 = float("nan") if (i * e) % 7 == 3 else i / 3 + e * 1e-9
            rows.append(
                {
                    "entity": entity,
                    "ts": ts.isoformat(),
                    "f1": f1,
                    "f2": f2,
                    "cat": cats[(i + e) % 4],
                    "secret": f"s{e}{i}",
                }
            )
    # exactly on window boundaries
    rows.append(
        {"entity": "alpha", "ts": "2024-03-02T00:00:00+00:00", "f1": 7.5, "f2": 0.0, "cat": "red", "secret": "b1"}
    )
    rows.append(
        {"entity": "beta", "ts": "2024-03-03T00:00:00+00:00", "f1": -1.0, "f2": 1.0, "cat": None, "secret": "b2"}
    )
    return rows


def _expected(rows, start, end, columns) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    frame["f1"] = frame["f1"].astype("float64")
    frame["f2"] = frame["f2"].astype("float64")
    frame = frame[(frame["ts"] >= pd.Timestamp(start)) & (frame["ts"] < pd.Timestamp(end))]
    frame = frame.sort_values(["entity", "ts"], kind="stable").reset_index(drop=True)
    return frame[columns]


@pytest.fixture(scope="module")
def table(bq_client, bq_dataset) -> str:
    from google.cloud import bigquery

    name = f"{bq_dataset}.{TABLE}"
    schema = [
        bigquery.SchemaField("entity", "STRING"),
        bigquery.SchemaField("ts", "TIMESTAMP"),
        bigquery.SchemaField("f1", "FLOAT64"),
        bigquery.SchemaField("f2", "FLOAT64"),
        bigquery.SchemaField("cat", "STRING"),
        bigquery.SchemaField("secret", "STRING"),
    ]
    bq_client.delete_table(name, not_found_ok=True)
    bq_client.create_table(bigquery.Table(name, schema=schema))
    errors = bq_client.insert_rows_json(name, _rows())
    assert errors == []
    return name


def _spec(table, **overrides) -> TableSpec:
    kwargs = dict(
        table=table,
        timestamp_column="ts",
        entity_column="entity",
        feature_columns=("f1", "f2"),
        categorical_columns=("cat",),
    )
    kwargs.update(overrides)
    return TableSpec(**kwargs)


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def _jobs_posted(emulator) -> int:
    count = 0
    for line in emulator.log().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("method") == "POST" and str(event.get("path", "")).endswith("/jobs"):
            count += 1
    return count


@pytest.mark.parametrize(
    "start,end",
    [
        (_utc(2024, 3, 1), _utc(2024, 3, 2)),
        (_utc(2024, 3, 2), _utc(2024, 3, 3)),
        (_utc(2024, 3, 1, 5), _utc(2024, 3, 3, 0, 0, 0, 1)),
        (_utc(2024, 2, 1), _utc(2024, 4, 1)),
    ],
)
def test_read_window_equals_expected_rows(bq_client, table, start, end):
    spec = _spec(table)
    read = BigQueryTableReader(bq_client, spec, use_storage_api=False, page_size=5).read_window(start, end)
    expected = _expected(_rows(), start, end, spec.columns)
    assert len(expected) > 0
    assert list(read.frame.columns) == spec.columns == ["entity", "ts", "f1", "f2", "cat"]
    assert str(read.frame["ts"].dtype) == "datetime64[ns, UTC]"
    pd.testing.assert_frame_equal(read.frame, expected, check_exact=True)
    # NULL and NaN both arrive as NaN; none was lost or invented
    assert read.frame["f1"].isna().sum() == expected["f1"].isna().sum() > 0


def test_window_is_half_open_and_windows_partition_the_rows(bq_client, table):
    reader = BigQueryTableReader(bq_client, _spec(table), use_storage_api=False)
    days = [reader.read_window(_utc(2024, 3, d), _utc(2024, 3, d + 1)).frame for d in (1, 2, 3, 4)]
    boundary = pd.Timestamp("2024-03-02T00:00:00Z")
    assert boundary not in set(days[0]["ts"]) and boundary in set(days[1]["ts"])
    assert sum(len(d) for d in days) == len(_rows())
    whole = pd.concat(days).sort_values(["entity", "ts"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, _expected(_rows(), _utc(2000, 1, 1), _utc(2100, 1, 1), reader.spec.columns))


def test_naive_and_offset_bounds_are_utc(bq_client, table):
    reader = BigQueryTableReader(bq_client, _spec(table), use_storage_api=False)
    naive = reader.read_window(datetime(2024, 3, 2), datetime(2024, 3, 3)).frame
    paris = pd.Timestamp("2024-03-02T01:00:00+01:00").to_pydatetime()
    offset = reader.read_window(paris, pd.Timestamp("2024-03-03T01:00:00+01:00").to_pydatetime()).frame
    pd.testing.assert_frame_equal(naive, offset)


def test_empty_window_has_columns_and_dtypes(bq_client, table):
    spec = _spec(table)
    read = BigQueryTableReader(bq_client, spec, use_storage_api=False).read_window(_utc(2030, 1, 1), _utc(2030, 1, 2))
    assert read.frame.empty and list(read.frame.columns) == spec.columns
    assert str(read.frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert read.frame["f1"].dtype == np.float64
    assert read.metadata["rows"] == 0


def test_metadata_reports_bytes_rows_pages(bq_client, table):
    reader = BigQueryTableReader(bq_client, _spec(table), use_storage_api=False, page_size=4)
    read = reader.read_window(_utc(2024, 3, 1), _utc(2024, 3, 2))
    meta = read.metadata
    assert meta["rows"] == len(read.frame) > 4
    assert meta["pages"] == -(-meta["rows"] // 4)  # paged, not one big fetch
    # the emulator reports 0 bytes processed and no bytes billed; real BigQuery fills both
    assert isinstance(meta["bytes_processed"], int) and meta["bytes_processed"] >= 0
    assert "bytes_billed" in meta and meta["storage_api"] is False
    assert meta["bytes_read"] > 0 and meta["seconds"] >= meta["query_seconds"] >= 0
    assert meta["job_id"] and meta["query"] == reader.query


def test_one_query_per_window_with_only_configured_columns(bq_client, bq_emulator, table):
    spec = _spec(table, feature_columns=("f2",), categorical_columns=())
    reader = BigQueryTableReader(bq_client, spec, use_storage_api=False)
    reader.validate()
    before = _jobs_posted(bq_emulator)
    read = reader.read_window(_utc(2024, 3, 1), _utc(2024, 3, 3))
    assert _jobs_posted(bq_emulator) - before == 1  # the emulator's request log: one jobs.insert
    assert list(read.frame.columns) == ["entity", "ts", "f2"]
    server_side = bq_client.get_job(read.metadata["job_id"]).query  # the text the server ran
    assert server_side.startswith("SELECT `entity`, `ts`, `f2` FROM `test-project.emberharmony_test.readings`")
    for absent in ("secret", "cat", "f1", "*"):
        assert absent not in server_side
    assert "@start" in server_side and "@end" in server_side and "2024" not in server_side


class _NoCallsClient:
    """A client that fails the test if anything on it is used."""

    def __getattr__(self, name):
        raise AssertionError(f"client.{name} was used before the identifiers were validated")


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"table": "a.b"}, "'a.b'"),
        ({"table": "test-project.emberharmony_test.readings; DROP TABLE x"}, "DROP"),
        ({"feature_columns": ("x; DROP",)}, "'x; DROP'"),
        ({"feature_columns": ("f`1",)}, "'f`1'"),
        ({"entity_column": "entity` OR 1=1 --"}, "entity` OR"),
        ({"timestamp_column": "ts)"}, "'ts)'"),
    ],
)
def test_bad_identifiers_rejected_before_any_request(bq_emulator, table, overrides, needle):
    before = bq_emulator.log().count('"http.request"')
    with pytest.raises(IdentifierError) as info:
        BigQueryTableReader(_NoCallsClient(), _spec(**{"table": table, **overrides}))
    assert needle in str(info.value)
    assert bq_emulator.log().count('"http.request"') == before


def test_typo_column_named_before_any_query(bq_client, table, monkeypatch):
    reader = BigQueryTableReader(
        bq_client, _spec(table, feature_columns=("f1", "f_two"), categorical_columns=("Cat",)), use_storage_api=False
    )

    def no_query(*args, **kwargs):
        raise AssertionError("a query was started before the columns were checked")

    monkeypatch.setattr(bq_client, "query", no_query)
    with pytest.raises(ValueError) as info:
        reader.read_window(_utc(2024, 3, 1), _utc(2024, 3, 2))
    message = str(info.value)
    assert "'f_two' (feature_columns)" in message and "'Cat' (categorical_columns)" in message
    assert "did you mean 'cat'" in message and "secret" in message  # lists the table's columns


def test_failed_query_raises_instead_of_returning_no_rows(bq_client, table):
    """bqemulator answers a failed query with an empty result through query_and_wait;
    the reader uses query().result(), which raises."""
    from google.api_core.exceptions import GoogleAPIError

    reader = BigQueryTableReader(bq_client, _spec(table, feature_columns=("f1", "no_such")), use_storage_api=False)
    reader._validated = True  # skip the schema check to reach the server with a bad column
    with pytest.raises(GoogleAPIError, match="no_such"):
        reader.read_window(_utc(2024, 3, 1), _utc(2024, 3, 2))


def test_storage_api_decision(bq_client, table, monkeypatch):
    spec = _spec(table)
    # against an emulator the automatic choice is REST (its gRPC endpoint is not the client's default)
    assert BigQueryTableReader(bq_client, spec).storage_client() is None
    assert (
        BigQueryTableReader(bq_client, spec, use_storage_api=False, bqstorage_client=object()).storage_client() is None
    )
    given = object()
    assert BigQueryTableReader(bq_client, spec, bqstorage_client=given).storage_client() is given
    # forced on without the package installed: a clear ImportError
    import google.cloud

    monkeypatch.setitem(sys.modules, "google.cloud.bigquery_storage", None)
    monkeypatch.delattr(google.cloud, "bigquery_storage", raising=False)
    with pytest.raises(ImportError, match="google-cloud-bigquery-storage"):
        BigQueryTableReader(bq_client, spec, use_storage_api=True).storage_client()
    assert BigQueryTableReader(bq_client, spec).storage_client() is None  # auto without it: REST


def test_storage_api_used_for_real_endpoints(monkeypatch):
    """Auto picks the Storage API for a googleapis endpoint when the package is present (no request is made)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    client = bigquery.Client(project="test-project", credentials=AnonymousCredentials())
    reader = BigQueryTableReader(client, _spec("test-project.emberharmony_test.readings"))
    storage = reader.storage_client()
    assert type(storage).__name__ == "BigQueryReadClient"
    assert reader.storage_client() is storage  # created once


def test_column_types_from_schema(bq_client, table):
    types = BigQueryTableReader(bq_client, _spec(table)).column_types()
    # types as the table was created (real BigQuery reports FLOAT64 back as FLOAT)
    assert {k: v.replace("FLOAT64", "FLOAT") for k, v in types.items()} == {
        "entity": "STRING",
        "ts": "TIMESTAMP",
        "f1": "FLOAT",
        "f2": "FLOAT",
        "cat": "STRING",
        "secret": "STRING",
    }
