"""Per-minute queries over in-process ASGI."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from service.api import query as query_route
from service.config import Settings
from service.schema import DAY_MS
from tests.conftest import make_client

PATH = "/metrics/heart-rate"
DAY = {"start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}


def post(c: TestClient, *readings: tuple[str, str, str, float]) -> None:
    body = {
        "readings": [
            {"user_id": u, "device_id": d, "timestamp": t, "heart_rate": v}
            for u, d, t, v in readings
        ]
    }
    r = c.post(PATH + "/batch", json=body)
    assert r.status_code == 202, r.text


def series(c: TestClient, **params: str) -> list[tuple[str, float, str]]:
    r = c.get(PATH, params={"user_id": "u", **DAY, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["data"])
    return [(b["timestamp"], b["heart_rate"], b["device_id"]) for b in body["data"]]


@pytest.mark.parametrize("scope", ["bucket", "timestamp"])
def test_challenge_example_in_both_scopes(settings: Settings, scope: str) -> None:
    with make_client(settings, priority_scope=scope) as c:
        post(
            c,
            ("u", "device_b", "2024-01-15T10:00:00Z", 80),
            ("u", "device_a", "2024-01-15T10:00:00Z", 75),
        )
        assert series(c) == [("2024-01-15T10:00:00Z", 75.0, "device_a")]


def test_bucket_scope_uses_the_best_device_of_the_minute(client: TestClient) -> None:
    post(
        client,
        ("u", "device_b", "2024-01-15T10:00:05Z", 80),
        ("u", "device_a", "2024-01-15T10:00:40Z", 70),
        ("u", "device_a", "2024-01-15T10:00:50Z", 72),
        ("u", "device_b", "2024-01-15T10:01:10Z", 90),
        ("u", "watch_z", "2024-01-15T10:02:00Z", 60),
        ("u", "watch_y", "2024-01-15T10:02:30Z", 64),
    )
    assert series(client) == [
        ("2024-01-15T10:00:00Z", 71.0, "device_a"),
        ("2024-01-15T10:01:00Z", 90.0, "device_b"),
        ("2024-01-15T10:02:00Z", 64.0, "watch_y"),  # unlisted: the id that sorts first
    ]


def test_timestamp_scope_keeps_every_uncontested_reading(settings: Settings) -> None:
    with make_client(settings, priority_scope="timestamp") as c:
        post(
            c,
            ("u", "device_b", "2024-01-15T10:00:00Z", 80),
            ("u", "device_a", "2024-01-15T10:00:00Z", 70),
            ("u", "device_b", "2024-01-15T10:00:30Z", 90),
        )
        assert series(c) == [("2024-01-15T10:00:00Z", 80.0, "device_a")]


def test_device_filter_uses_only_that_device(client: TestClient) -> None:
    post(
        client,
        ("u", "device_b", "2024-01-15T10:00:00Z", 80),
        ("u", "device_a", "2024-01-15T10:00:00Z", 75),
    )
    assert series(client, device_id="device_b") == [("2024-01-15T10:00:00Z", 80.0, "device_b")]


def test_duplicates_count_once_and_last_write_wins(client: TestClient) -> None:
    post(
        client,
        ("u", "device_a", "2024-01-15T10:00:00Z", 60),
        ("u", "device_a", "2024-01-15T10:00:00Z", 60),
        ("u", "device_a", "2024-01-15T10:00:30Z", 90),
    )
    assert series(client) == [("2024-01-15T10:00:00Z", 75.0, "device_a")]
    post(client, ("u", "device_a", "2024-01-15T10:00:00Z", 100))
    assert series(client) == [("2024-01-15T10:00:00Z", 95.0, "device_a")]


def test_last_write_wins_across_a_flush(client: TestClient) -> None:
    post(client, ("u", "device_a", "2024-01-15T10:00:00Z", 60))
    client.portal.call(client.app.api.state.context.ingestor.flusher.flush)  # type: ignore[attr-defined]
    post(client, ("u", "device_a", "2024-01-15T10:00:00Z", 100))
    assert series(client) == [("2024-01-15T10:00:00Z", 100.0, "device_a")]


def test_offsets_and_fractions_land_in_utc_minutes(client: TestClient) -> None:
    post(
        client,
        ("u", "device_a", "2024-01-15T12:00:59.999+02:00", 70),
        ("u", "device_a", "2024-01-15T10:01:00.000Z", 80),
        ("u", "device_a", "2024-01-15T10:00:00.0009", 90),
    )  # naive means UTC
    assert series(client) == [
        ("2024-01-15T10:00:00Z", 80.0, "device_a"),
        ("2024-01-15T10:01:00Z", 80.0, "device_a"),
    ]


def test_range_is_start_inclusive_end_exclusive(client: TestClient) -> None:
    post(
        client,
        ("u", "device_a", "2024-01-15T10:00:00Z", 70),
        ("u", "device_a", "2024-01-15T10:05:00Z", 80),
    )
    got = series(client, start="2024-01-15T10:00:00Z", end="2024-01-15T10:05:00Z")
    assert got == [("2024-01-15T10:00:00Z", 70.0, "device_a")]
    got = series(client, start="2024-01-15T10:00:00.001Z", end="2024-01-15T10:05:00.001Z")
    assert got == [("2024-01-15T10:05:00Z", 80.0, "device_a")]


def test_query_offsets_are_honoured_even_unencoded(client: TestClient) -> None:
    post(client, ("u", "device_a", "2024-01-15T10:00:00Z", 70))
    r = client.get(
        PATH + "?user_id=u&start=2024-01-15T11:00:00+01:00&end=2024-01-15T11:01:00+01:00"
    )
    assert r.status_code == 200
    assert r.json()["count"] == 1


def test_no_data_is_404(client: TestClient) -> None:
    r = client.get(PATH, params={"user_id": "nobody", **DAY})
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"user_id": "u", "end": DAY["end"]}, "start"),
        ({"user_id": "u", "start": "soon", "end": DAY["end"]}, "start"),
        ({"user_id": "u", "start": DAY["start"], "end": "later"}, "end"),
        ({"user_id": "u", "start": DAY["end"], "end": DAY["start"]}, "end"),
        ({"user_id": "u", "start": DAY["start"], "end": DAY["start"]}, "end"),
        ({"user_id": "u", "start": "2024-01-01T00:00:00Z", "end": "2024-02-02T00:00:00Z"}, "end"),
        ({"user_id": "", **DAY}, "user_id"),
        ({"user_id": "u", "device_id": "d" * 65, **DAY}, "device_id"),
    ],
)
def test_bad_query_parameters_are_400(client: TestClient, params, field) -> None:
    r = client.get(PATH, params=params)
    assert r.status_code == 400
    assert [d["field"] for d in r.json()["detail"]] == [field]


def test_health_ready_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "healthy", "service": "heart-rate-metrics"}
    assert client.get("/ready").status_code == 200
    post(client, ("u", "device_a", "2024-01-15T10:00:00Z", 70))
    text = client.get("/metrics").text
    assert 'hr_readings_accepted_total{endpoint="batch"}' in text


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_request_ids_are_echoed_or_generated(client: TestClient) -> None:
    given = client.get("/health", headers={"X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 16
    assert made != client.get("/health").headers["x-request-id"]


def test_short_local_series_are_answered_on_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    post(client, ("u", "device_a", "2024-01-15T10:00:00Z", 70))
    on_loop: list[bool] = []
    plain = query_route.series

    def watched(*args: object) -> object:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread runs no event loop
            on_loop.append(False)
        return plain(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(query_route, "series", watched)
    week = {"start": "2024-01-15T00:00:00Z", "end": "2024-01-22T00:00:00Z"}
    assert series(client) == [("2024-01-15T10:00:00Z", 70.0, "device_a")]
    assert series(client, interval="1s", end="2024-01-15T12:00:00Z")
    assert series(client, **week) == [("2024-01-15T10:00:00Z", 70.0, "device_a")]
    assert on_loop == [True, False, False]


@pytest.mark.parametrize(
    ("store", "span", "width", "inline"),
    [
        ("local", DAY_MS, 60_000, True),
        ("local", 60_000, 1_000, True),  # a minute of seconds: 60 buckets
        ("local", DAY_MS + 1, 60_000, False),  # more than a day
        ("local", DAY_MS, 1_000, False),  # 86,400 buckets
        ("local", 2 * 3_600_000, 1_000, False),  # 7,200 buckets
        ("delta", 60_000, 60_000, False),  # reads may wait on the network
    ],
)
def test_which_series_run_inline(
    settings: Settings, store: str, span: int, width: int, inline: bool
) -> None:
    chosen = replace(settings, store=store)
    assert query_route.runs_inline(chosen, 1_000, 1_000 + span, width) is inline
