"""GET /users/<user_id>/export over in-process ASGI."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from starlette.testclient import TestClient

from service.storage.compaction import compact
from tests.conftest import flush

HEADER = "timestamp,device_id,metric,value"


def post(c: TestClient, user: str, *records: tuple[str, str, dict[str, float]]) -> None:
    body = [{"user_id": user, "device_id": d, "timestamp": t, **v} for t, d, v in records]
    r = c.post("/readings", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["rejected"] == 0


def store(c: TestClient):  # type: ignore[no-untyped-def]
    return c.app.api.state.context.store  # type: ignore[attr-defined]


def export(c: TestClient, user: str = "u", **query: str):  # type: ignore[no-untyped-def]
    return c.get(f"/users/{user}/export", params=query)


@pytest.fixture
def history(client: TestClient) -> TestClient:
    """Two days of u in three states: compacted, flushed, buffered; a retry and a
    replaced value; another user on the same days."""
    post(
        client,
        "u",
        ("2024-01-16T08:00:00Z", "device_b", {"heart_rate": 80, "steps": 10}),
        ("2024-01-15T23:59:59.5Z", "=cmd|' /C calc'!A0", {"heart_rate": 60}),
    )
    flush(client)
    assert compact(store(client), force=True, grace_s=3600) is not None
    post(client, "other", ("2024-01-15T12:00:00Z", "device_a", {"heart_rate": 99}))
    post(client, "u", ("2024-01-15T10:00:00Z", "device_a", {"heart_rate": 70, "calories": 1.5}))
    flush(client)
    post(
        client,
        "u",
        ("2024-01-15T10:00:00Z", "device_a", {"heart_rate": 70}),  # a retry
        ("2024-01-16T08:00:00Z", "device_b", {"steps": 12}),  # replaces 10
        ("2024-01-16T08:00:00Z", "device_a", {"steps": 7}),
    )
    return client


def test_csv_rows_sorted_by_metric_then_time_escaped(history: TestClient) -> None:
    r = export(history, format="csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="export.csv"'
    assert r.text.splitlines() == [
        HEADER,
        "2024-01-15T10:00:00.000Z,device_a,calories,1.5",
        "2024-01-15T10:00:00.000Z,device_a,heart_rate,70.0",
        # a device id a spreadsheet would run as a formula is text with a leading '
        "2024-01-15T23:59:59.500Z,'=cmd|' /C calc'!A0,heart_rate,60.0",
        "2024-01-16T08:00:00.000Z,device_b,heart_rate,80.0",
        "2024-01-16T08:00:00.000Z,device_a,steps,7.0",
        "2024-01-16T08:00:00.000Z,device_b,steps,12.0",
    ]


def test_ndjson_and_parquet_hold_the_same_rows(history: TestClient) -> None:
    lines = export(history, format="ndjson").text.splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows[0] == {
        "timestamp": "2024-01-15T10:00:00.000Z",
        "device_id": "device_a",
        "metric": "calories",
        "value": 1.5,
    }
    r = export(history, format="parquet")
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    frame = pl.read_parquet(io.BytesIO(r.content))
    assert frame.schema["timestamp"] == pl.Datetime("ms", "UTC")
    as_text = frame.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    assert as_text.to_dicts() == rows  # parquet cells are not escaped: no spreadsheet reads them
    metrics = [r["metric"] for r in rows]
    assert metrics == ["calories", *["heart_rate"] * 3, "steps", "steps"]


def test_metric_and_range_narrow_the_export(history: TestClient) -> None:
    text = export(
        history, format="csv", metric="heart-rate", start="2024-01-15T11:00:00Z"
    ).text.splitlines()
    assert [line.split(",")[0] for line in text[1:]] == [
        "2024-01-15T23:59:59.500Z",
        "2024-01-16T08:00:00.000Z",
    ]
    r = export(history, format="csv", metric="steps", end="2024-01-16T08:00:00Z")
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"format": "csv", "user_id": "u"}, "user_id"),
        ({"format": "xlsx"}, "format"),
        ({}, "format"),
        ({"format": "csv", "metric": "weight"}, "metric"),
        ({"format": "csv", "start": "yesterday"}, "start"),
        ({"format": "csv", "start": "2024-01-16T00:00:00Z", "end": "2024-01-15T00:00:00Z"}, "end"),
    ],
)
def test_bad_parameters_are_named(history: TestClient, query: dict[str, str], field: str) -> None:
    r = export(history, **query)
    assert r.status_code == 400
    assert [d["field"] for d in r.json()["detail"]] == [field]


def test_no_readings_is_404(history: TestClient) -> None:
    r = export(history, "nobody", format="ndjson")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_user_id_with_a_slash(client: TestClient) -> None:
    post(client, "org/u1", ("2024-01-15T10:00:00Z", "device_a", {"steps": 3}))
    r = client.get("/users/org%2Fu1/export", params={"format": "csv"})
    assert r.status_code == 200, r.text
    assert r.text.splitlines()[1] == "2024-01-15T10:00:00.000Z,device_a,steps,3.0"
