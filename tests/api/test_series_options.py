"""Series options over in-process ASGI: interval, tz, stats, CSV, gzip, unknown parameters."""

from __future__ import annotations

import gzip

import pytest
from starlette.testclient import TestClient

PATH = "/metrics/heart-rate"


def post(c: TestClient, *readings: tuple[str, str, float]) -> None:
    body = {
        "readings": [
            {"user_id": "u", "device_id": d, "timestamp": t, "heart_rate": v}
            for t, d, v in readings
        ]
    }
    assert c.post(PATH + "/batch", json=body).status_code == 202


def get(c: TestClient, start: str, end: str, **params: str) -> list[dict[str, object]]:
    r = c.get(PATH, params={"user_id": "u", "start": start, "end": end, **params})
    assert r.status_code == 200, r.text
    data: list[dict[str, object]] = r.json()["data"]
    return data


def test_berlin_days_of_23_and_25_hours_are_one_bucket_each(client: TestClient) -> None:
    # hourly readings from 2024-03-30 to 2024-04-01 local, over the spring change
    stamps = [f"2024-03-{d}T{h:02d}:30:00Z" for d in (29, 30, 31) for h in range(24)]
    post(client, *((t, "device_a", 60.0) for t in stamps))
    days = get(
        client,
        "2024-03-30T00:00:00+01:00",
        "2024-04-01T00:00:00+02:00",
        interval="1d",
        tz="Europe/Berlin",
        stats="count",
    )
    assert [(b["timestamp"], b["count"]) for b in days] == [
        ("2024-03-30T00:00:00+01:00", 24),
        ("2024-03-31T00:00:00+01:00", 23),
    ]
    stamps = [f"2024-10-{d}T{h:02d}:30:00Z" for d in (25, 26, 27) for h in range(24)]
    post(client, *((t, "device_a", 70.0) for t in stamps))
    days = get(
        client,
        "2024-10-27T00:00:00+02:00",
        "2024-10-28T00:00:00+01:00",
        interval="1d",
        tz="Europe/Berlin",
        stats="count",
    )
    assert [(b["timestamp"], b["count"]) for b in days] == [("2024-10-27T00:00:00+02:00", 25)]


def test_fall_back_hour_is_two_buckets(client: TestClient) -> None:
    post(
        client,
        ("2024-10-27T00:10:00Z", "device_a", 60.0),
        ("2024-10-27T01:10:00Z", "device_a", 80.0),
    )
    hours = get(
        client, "2024-10-27T00:00:00Z", "2024-10-27T02:00:00Z", interval="1h", tz="Europe/Berlin"
    )
    assert [(b["timestamp"], b["heart_rate"]) for b in hours] == [
        ("2024-10-27T02:00:00+02:00", 60.0),
        ("2024-10-27T02:00:00+01:00", 80.0),
    ]


def test_half_hour_zone_cuts_hours_at_half_past_utc(client: TestClient) -> None:
    post(
        client,
        ("2024-01-15T10:20:00Z", "device_a", 60.0),
        ("2024-01-15T10:40:00Z", "device_a", 80.0),
    )
    hours = get(
        client, "2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z", interval="1h", tz="Asia/Kolkata"
    )
    assert [(b["timestamp"], b["heart_rate"]) for b in hours] == [
        ("2024-01-15T15:00:00+05:30", 60.0),
        ("2024-01-15T16:00:00+05:30", 80.0),
    ]


def test_narrow_buckets_align_to_utc_and_carry_the_zone_offset(client: TestClient) -> None:
    post(client, ("2024-01-15T10:20:00Z", "device_a", 60.0))
    got = get(
        client, "2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z", interval="30m", tz="Asia/Kolkata"
    )
    assert [b["timestamp"] for b in got] == ["2024-01-15T15:30:00+05:30"]  # 10:00Z


def test_wide_bucket_is_the_mean_over_readings_and_the_majority_device(
    client: TestClient,
) -> None:
    post(
        client,
        # minute 10:00: device_b alone, three readings; minute 10:01: device_a, one reading
        ("2024-01-15T10:00:00Z", "device_b", 60.0),
        ("2024-01-15T10:00:10Z", "device_b", 60.0),
        ("2024-01-15T10:00:20Z", "device_b", 60.0),
        ("2024-01-15T10:01:00Z", "device_a", 100.0),
        ("2024-01-15T10:01:00Z", "device_b", 200.0),  # loses the minute to device_a
    )
    [bucket] = get(
        client, "2024-01-15T10:00:00Z", "2024-01-15T10:05:00Z", interval="5m", stats="min,max,count"
    )
    assert bucket == {
        "timestamp": "2024-01-15T10:00:00Z",
        "heart_rate": 70.0,  # (3 x 60 + 100) / 4, not (60 + 100) / 2
        "device_id": "device_b",
        "min": 60.0,
        "max": 100.0,
        "count": 4,
    }


def test_majority_tie_goes_to_the_better_device(client: TestClient) -> None:
    post(
        client,
        ("2024-01-15T10:00:00Z", "device_b", 60.0),
        ("2024-01-15T10:01:00Z", "device_a", 80.0),
    )
    [bucket] = get(client, "2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z", interval="15m")
    assert (bucket["device_id"], bucket["heart_rate"]) == ("device_a", 70.0)


def test_one_second_buckets_pick_priority_per_second(client: TestClient) -> None:
    post(
        client,
        ("2024-01-15T10:00:00.100Z", "device_b", 60.0),
        ("2024-01-15T10:00:00.600Z", "device_b", 62.0),
        ("2024-01-15T10:00:01.000Z", "device_b", 90.0),
        ("2024-01-15T10:00:01.500Z", "device_a", 70.0),
    )
    got = get(client, "2024-01-15T10:00:00Z", "2024-01-15T10:01:00Z", interval="1s")
    assert [(b["timestamp"], b["heart_rate"], b["device_id"]) for b in got] == [
        ("2024-01-15T10:00:00Z", 61.0, "device_b"),
        ("2024-01-15T10:00:01Z", 70.0, "device_a"),
    ]


def test_csv_has_a_header_and_the_same_buckets(client: TestClient) -> None:
    post(client, ("2024-01-15T10:00:00Z", "device_a", 60.0))
    r = client.get(
        PATH,
        params={
            "user_id": "u",
            "start": "2024-01-15T10:00:00Z",
            "end": "2024-01-15T11:00:00Z",
            "stats": "count",
        },
        headers={"accept": "text/csv"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines() == [
        "timestamp,heart_rate,device_id,count",
        "2024-01-15T10:00:00Z,60.0,device_a,1",
    ]


def test_large_answers_are_gzipped_when_accepted(client: TestClient) -> None:
    post(client, *((f"2024-01-15T10:{m:02d}:00Z", "device_a", 60.0) for m in range(60)))
    params = {"user_id": "u", "start": "2024-01-15T10:00:00Z", "end": "2024-01-15T11:00:00Z"}
    r = client.get(PATH, params=params, headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.json()["count"] == 60  # the client inflates it
    raw = client.get(PATH, params=params, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert raw.json() == r.json()
    with client.stream("GET", PATH, params=params, headers={"accept-encoding": "gzip"}) as s:
        assert gzip.decompress(b"".join(s.iter_raw())) == raw.content


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"interval": "2m"}, "interval"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"stats": "min,median"}, "stats"),
        ({"stats": "min,min"}, "stats"),
        ({"interval": "1s", "end": "2024-01-16T00:00:00Z"}, "end"),  # 86,400 buckets
    ],
)
def test_bad_or_unknown_parameters_are_named(
    client: TestClient, params: dict[str, str], field: str
) -> None:
    query = {"user_id": "u", "start": "2024-01-15T00:00:00Z", "end": "2024-01-15T01:00:00Z"}
    r = client.get(PATH, params={**query, **params})
    assert r.status_code == 400
    assert [d["field"] for d in r.json()["detail"]] == [field]


def test_day_buckets_allow_long_ranges(client: TestClient) -> None:
    post(client, ("2024-01-15T10:00:00Z", "device_a", 60.0))
    got = get(client, "2000-01-01T00:00:00Z", "2040-01-01T00:00:00Z", interval="1d")
    assert [b["timestamp"] for b in got] == ["2024-01-15T00:00:00Z"]
