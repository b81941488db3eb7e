"""Against real gunicorn (2 workers): a user's export holds every reading exactly once,
compacted days and readings still in another worker's WAL alike, in every format."""

from __future__ import annotations

import http.client
import io
import json
from pathlib import Path

import polars as pl
import pytest

from ops.server import Server
from service.schema import DAY_MS, ROW_SCHEMA
from service.storage.compaction import compact_all
from service.storage.store import Store
from tests.integration.conftest import request

pytestmark = pytest.mark.integration

BASE = 1_705_276_800_000  # 2024-01-15T00:00:00Z
DAYS = 3


def settled_history(root: Path) -> None:
    """``DAYS`` days at 1 Hz of heart rate for user "big", compacted, before the server."""
    store = Store(root, "loader", 10)
    store.ensure_layout()
    for d in range(DAYS):
        ts = pl.int_range(0, 86_400, eager=True) * 1000 + BASE + d * DAY_MS
        frame = pl.DataFrame(
            {"user_id": "big", "device_id": "device_a", "ts": ts, "value": 70.0, "seq": ts},
            schema=ROW_SCHEMA,
        )
        store.publish({"heart_rate": frame})
    compact_all(store)


def get(server: Server, path: str) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_export_of_a_large_user_from_every_worker(server_factory, tmp_path: Path) -> None:
    settled_history(tmp_path / "data")
    server = server_factory(2, HR_FLUSH_INTERVAL_S="3600")
    late = [
        # replaces a compacted reading; a new device; a formula-like id; steps on day 2
        {
            "user_id": "big",
            "device_id": "device_a",
            "timestamp": "2024-01-15T00:00:05Z",
            "heart_rate": 99,
        },
        {
            "user_id": "big",
            "device_id": "-ring",
            "timestamp": "2024-01-16T12:00:00Z",
            "heart_rate": 61,
            "steps": 4,
        },
    ]
    for record in late:  # fresh connections: both workers take some
        for _ in range(2):
            assert request(server, "POST", "/readings", [record])[0] == 202
    for _ in range(4):  # whichever worker answers sees the other's unflushed readings
        status, body = get(server, "/users/big/export?format=csv")
        assert status == 200
        lines = body.decode().splitlines()
        assert lines[0] == "timestamp,device_id,metric,value"
        assert len(lines) == 1 + DAYS * 86_400 + 2  # the replaced reading counted once
        assert lines[1:7] == [
            f"2024-01-15T00:00:0{s}.000Z,device_a,heart_rate,{99.0 if s == 5 else 70.0}"
            for s in range(6)
        ]
        assert "2024-01-16T12:00:00.000Z,'-ring,heart_rate,61.0" in lines
        assert lines[-1] == "2024-01-16T12:00:00.000Z,'-ring,steps,4.0"
    status, body = get(server, "/users/big/export?format=parquet")
    frame = pl.read_parquet(io.BytesIO(body))
    assert frame.height == DAYS * 86_400 + 2
    assert frame.filter(pl.col("metric") == "heart_rate")["timestamp"].is_sorted()
    status, body = get(server, "/users/big/export?format=ndjson&metric=steps")
    assert [json.loads(line) for line in body.splitlines()] == [
        {
            "timestamp": "2024-01-16T12:00:00.000Z",
            "device_id": "-ring",
            "metric": "steps",
            "value": 4.0,
        }
    ]
    assert get(server, "/users/nobody/export?format=csv")[0] == 404
    status, body = get(server, "/users/big/export?format=csv&limit=3")
    assert status == 400
    assert json.loads(body)["detail"][0]["field"] == "limit"
