"""GET /summary over in-process ASGI."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

DAY = {"user_id": "u", "start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}


def post(c: TestClient, *readings: tuple[str, str, float]) -> None:
    body = {
        "readings": [
            {"user_id": "u", "device_id": d, "timestamp": t, "heart_rate": v}
            for t, d, v in readings
        ]
    }
    assert c.post("/metrics/heart-rate/batch", json=body).status_code == 202


def minute(m: int) -> str:
    return f"2024-01-15T10:{m:02d}:00Z"


def test_heart_rate_after_priority_and_resting(client: TestClient) -> None:
    # minutes 0-3 and 5-9 have readings (4 is a gap); device_b loses every minute to device_a
    values = {0: 50, 1: 50, 2: 50, 3: 50, 5: 70, 6: 60, 7: 60, 8: 60, 9: 70}
    post(client, *((minute(m), "device_a", float(v)) for m, v in values.items()))
    post(client, *((minute(m), "device_b", 40.0) for m in values))
    post(client, (minute(0), "device_a", 50.0))  # a retry: no double count
    r = client.get("/summary", params=DAY)
    assert r.status_code == 200
    body = r.json()
    assert body["heart_rate"] == {
        "mean": pytest.approx(520 / 9),
        "min": 50.0,
        "max": 70.0,
        "count": 9,
        "minutes": 9,
        # 0-3 is only four minutes; the only whole run of five is 5-9
        "resting": pytest.approx(64.0),
    }
    assert body["devices"] == [{"device_id": "device_a", "readings": 9, "minutes": 9}]
    assert (body["start"], body["end"]) == ("2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z")


def test_resting_is_null_without_five_consecutive_minutes(client: TestClient) -> None:
    post(client, *((minute(m), "device_a", 60.0) for m in (0, 1, 2, 3, 5, 6)))
    assert client.get("/summary", params=DAY).json()["heart_rate"]["resting"] is None


def test_range_is_echoed_in_the_zone(client: TestClient) -> None:
    post(client, (minute(0), "device_a", 60.0))
    body = client.get("/summary", params={**DAY, "tz": "Australia/Sydney"}).json()
    assert (body["start"], body["end"]) == (
        "2024-01-15T11:00:00+11:00",
        "2024-01-16T11:00:00+11:00",
    )


def test_no_readings_is_404_and_unknown_parameters_are_400(client: TestClient) -> None:
    assert client.get("/summary", params=DAY).status_code == 404
    r = client.get("/summary", params={**DAY, "interval": "1h"})
    assert r.status_code == 400
    assert r.json()["detail"][0]["field"] == "interval"
