"""Queries past raw retention over in-process ASGI: rollups answer, 1s buckets cannot."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.testclient import TestClient

from service.schema import DAY_MS
from service.storage.compaction import compact
from service.storage.retention import Retention

OLD_DAY = (int(time.time() * 1000) // DAY_MS - 20) * DAY_MS  # past a 10-day retention


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_old_range_answers_per_minute_but_not_per_second(client: TestClient) -> None:
    body = {
        "readings": [
            {"user_id": "u", "device_id": d, "timestamp": iso(OLD_DAY + s * 1000), "heart_rate": v}
            for s, d, v in [(0, "device_b", 80), (0, "device_a", 75), (30, "device_a", 65)]
        ]
    }
    assert client.post("/metrics/heart-rate/batch", json=body).status_code == 202
    context = client.app.api.state.context  # type: ignore[attr-defined]
    client.portal.call(context.ingestor.flusher.flush)
    assert compact(context.store, force=True, grace_s=0.0, retention=Retention(10)) is not None
    assert context.store.manifest.read().rollups  # the raw day is gone
    window = {"user_id": "u", "start": iso(OLD_DAY), "end": iso(OLD_DAY + 3_600_000)}
    r = client.get("/metrics/heart-rate", params={**window, "stats": "min,max,count"})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [
        {
            "timestamp": iso(OLD_DAY),
            "heart_rate": 70.0,
            "device_id": "device_a",
            "min": 65.0,
            "max": 75.0,
            "count": 2,
        }
    ]
    r = client.get("/metrics/heart-rate", params={**window, "interval": "1s"})
    assert r.status_code == 400
    (detail,) = r.json()["detail"]
    assert detail["field"] == "interval"
    assert "only per-minute rollups are kept" in detail["reason"]
    summary = client.get("/summary", params=window).json()
    assert summary["heart_rate"]["count"] == 2
