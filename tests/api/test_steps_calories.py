"""Steps and calories: the same single and batch routes as heart rate, their own rules."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from tests.api.test_ingest import GOOD, fields

STEPS = "/metrics/steps"
CALORIES = "/metrics/calories"
DAY = {"start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}
BASE = {k: v for k, v in GOOD.items() if k != "heart_rate"}


def steps(value: object, **changes: object) -> dict[str, object]:
    return {**BASE, "steps": value, **changes}


def calories(value: object, **changes: object) -> dict[str, object]:
    return {**BASE, "calories": value, **changes}


def series(c: TestClient, path: str, field: str, user: str) -> list[tuple[str, float]]:
    r = c.get(path, params={"user_id": user, **DAY})
    assert r.status_code == 200, r.text
    return [(b["timestamp"], b[field]) for b in r.json()["data"]]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (STEPS, steps(0)),
        (STEPS, steps(100_000)),
        (STEPS, steps(40.0)),  # a float with no fraction is an integer
        (STEPS, steps(99_999)),
        (CALORIES, calories(0)),
        (CALORIES, calories(10_000)),
        (CALORIES, calories(4.25)),
    ],
)
def test_valid_values_are_accepted_single_and_in_a_batch(
    client: TestClient, path: str, body: dict[str, object]
) -> None:
    assert client.post(path, json=body).status_code == 202
    r = client.post(path + "/batch", json={"readings": [body, body]})
    assert r.status_code == 202
    assert (r.json()["accepted"], r.json()["rejected"]) == (2, 0)


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        (STEPS, steps(40.5), "must be an integer"),
        (STEPS, steps(0.001), "must be an integer"),
        (STEPS, steps(-1), "must be between 0 and 100000"),
        (STEPS, steps(100_001), "must be between 0 and 100000"),
        (STEPS, steps(100_000.5), "must be between 0 and 100000"),
        (STEPS, steps(True), "must be a JSON number"),
        (STEPS, steps("40"), "must be a JSON number"),
        (STEPS, steps(None), "must be a JSON number"),
        (STEPS, BASE, "field required"),
        (CALORIES, calories(-0.5), "must be between 0 and 10000"),
        (CALORIES, calories(10_000.01), "must be between 0 and 10000"),
        (CALORIES, calories(False), "must be a JSON number"),
        (CALORIES, calories("4.5"), "must be a JSON number"),
        (CALORIES, steps(5), "field required"),  # another metric's field is not this one
    ],
)
def test_invalid_values_are_named_single_and_in_a_batch(
    client: TestClient, path: str, body: dict[str, object], reason: str
) -> None:
    field = path.rsplit("/", 1)[1]
    single = client.post(path, json=body)
    assert single.status_code == 400
    assert single.json()["detail"] == [{"field": field, "reason": reason}]
    good = steps(10) if path == STEPS else calories(10)
    r = client.post(path + "/batch", json={"readings": [good, body]})
    assert r.status_code == 202
    assert r.json()["errors"] == [{"index": 1, "field": field, "reason": reason}]
    assert client.post(path + "/batch", json={"readings": [body]}).status_code == 400


def test_a_fraction_is_refused_however_it_is_written(client: TestClient) -> None:
    for text in ("40.5", "4.05e1", "40.000001"):
        raw = json.dumps(steps(1)).replace('"steps": 1', f'"steps": {text}').encode()
        r = client.post(STEPS, content=raw)
        assert (r.status_code, fields(r)) == (400, ["steps"]), text
    for text in ("40.0", "4e1", "4.0E1", "-0.0"):
        raw = json.dumps(steps(1)).replace('"steps": 1', f'"steps": {text}').encode()
        assert client.post(STEPS, content=raw).status_code == 202, text


def test_each_metric_is_stored_apart(client: TestClient) -> None:
    user = {"user_id": "apart"}
    assert client.post(STEPS, json=steps(120, **user)).status_code == 202
    assert client.post(CALORIES, json=calories(3.5, **user)).status_code == 202
    assert series(client, STEPS, "steps", "apart") == [("2024-01-15T10:00:00Z", 120)]
    assert series(client, CALORIES, "calories", "apart") == [("2024-01-15T10:00:00Z", 3.5)]
    r = client.get("/metrics/heart-rate", params={"user_id": "apart", **DAY})
    assert r.status_code == 404


def test_the_last_write_wins_per_metric(client: TestClient) -> None:
    user = {"user_id": "lww"}
    at = {"timestamp": "2024-01-15T10:05:00Z"}
    assert client.post(STEPS, json=steps(100, **user, **at)).status_code == 202
    assert client.post(CALORIES, json=calories(7, **user, **at)).status_code == 202
    # the same identity again, a different value: it replaces the earlier one
    assert client.post(STEPS, json=steps(250, **user, **at)).status_code == 202
    batch = {"readings": [calories(8, **user, **at), calories(9.5, **user, **at)]}
    assert client.post(CALORIES + "/batch", json=batch).status_code == 202
    assert series(client, STEPS, "steps", "lww") == [("2024-01-15T10:05:00Z", 250)]
    assert series(client, CALORIES, "calories", "lww") == [("2024-01-15T10:05:00Z", 9.5)]


def test_the_shortcut_and_the_route_agree_on_integers(client: TestClient) -> None:
    # a batch of integers goes the fast way; one with 40.0 the slow way; both are stored
    fast = [steps(i, user_id="ints", timestamp=f"2024-01-15T10:0{i}:00Z") for i in range(3)]
    slow = [steps(40.0, user_id="ints", timestamp="2024-01-15T10:03:00Z")]
    for body in (fast, slow):
        r = client.post(STEPS + "/batch", json={"readings": body})
        assert (r.status_code, r.json()["rejected"]) == (202, 0)
    assert [v for _, v in series(client, STEPS, "steps", "ints")] == [0, 1, 2, 40]
