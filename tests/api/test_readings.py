"""POST /readings: records of several metrics, each present field one reading."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.config import Settings
from tests.api.test_ingest import fields, json_values, sample
from tests.conftest import make_client

PATH = "/readings"
DAY = {"start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}
BASE = {"user_id": "u1", "device_id": "device_a", "timestamp": "2024-01-15T10:00:00Z"}
NO_METRIC = "must hold at least one of heart_rate, steps, calories"


def record(**changes: object) -> dict[str, object]:
    return {**BASE, **changes}


def series(c: TestClient, metric: str, user: str) -> list[tuple[str, float, str]]:
    r = c.get(f"/metrics/{metric}", params={"user_id": user, **DAY})
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    field = metric.replace("-", "_")
    return [(b["timestamp"], b[field], b["device_id"]) for b in r.json()["data"]]


@pytest.mark.parametrize("wrapped", [True, False], ids=["object", "bare array"])
def test_each_metric_field_becomes_one_reading(client: TestClient, wrapped: bool) -> None:
    user = f"mixed-{wrapped}"
    records = [
        record(user_id=user, heart_rate=72, steps=30, calories=1.5),
        record(user_id=user, timestamp="2024-01-15T10:01:00Z", steps=12),
        record(user_id=user, timestamp="2024-01-15T10:02:00Z", heart_rate=80.5),
    ]
    r = client.post(PATH, json={"readings": records} if wrapped else records)
    assert r.status_code == 202
    assert r.json() == {
        "status": "accepted",
        "accepted": 3,
        "rejected": 0,
        "total": 3,
        "errors": [],
        "by_metric": {"heart_rate": 2, "steps": 2, "calories": 1},
    }
    assert series(client, "heart-rate", user) == [
        ("2024-01-15T10:00:00Z", 72.0, "device_a"),
        ("2024-01-15T10:02:00Z", 80.5, "device_a"),
    ]
    assert series(client, "steps", user) == [
        ("2024-01-15T10:00:00Z", 30, "device_a"),
        ("2024-01-15T10:01:00Z", 12, "device_a"),
    ]
    assert series(client, "calories", user) == [("2024-01-15T10:00:00Z", 1.5, "device_a")]


def test_a_bad_record_is_rejected_whole_and_the_others_kept(client: TestClient) -> None:
    user = "whole"
    records = [
        record(user_id=user, heart_rate=70, steps=5),
        # a good heart rate beside a bad step count: neither is stored
        record(user_id=user, timestamp="2024-01-15T10:01:00Z", heart_rate=71, steps=40.5),
        record(user_id=user, timestamp="2024-01-15T10:02:00Z"),  # no metric at all
        record(user_id="", device_id=7, timestamp="soon", calories=-1, heart_rate="70"),
        "not a record",
        record(user_id=user, timestamp="2024-01-15T10:03:00Z", calories=2),
    ]
    r = client.post(PATH, json=records)
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], body["rejected"], body["total"]) == (2, 4, 6)
    assert body["by_metric"] == {"heart_rate": 1, "steps": 1, "calories": 1}
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "steps"),
        (2, "metrics"),
        (3, "user_id"),
        (3, "device_id"),
        (3, "timestamp"),
        (3, "heart_rate"),
        (3, "calories"),
        (4, "record"),
    ]
    assert body["errors"][0]["reason"] == "must be an integer"
    assert body["errors"][1]["reason"] == NO_METRIC
    assert series(client, "heart-rate", user) == [("2024-01-15T10:00:00Z", 70.0, "device_a")]
    assert series(client, "steps", user) == [("2024-01-15T10:00:00Z", 5, "device_a")]
    assert series(client, "calories", user) == [("2024-01-15T10:03:00Z", 2.0, "device_a")]


@pytest.mark.parametrize(
    ("records", "field"),
    [
        ([record()], "metrics"),
        ([record(steps=None)], "steps"),  # null is not an absent metric
        ([record(heart_rate=10, calories=1)], "heart_rate"),
        ([record(steps=True)], "steps"),
        ([record(calories="1")], "calories"),
    ],
)
def test_nothing_valid_is_400_with_the_error_list(client: TestClient, records, field) -> None:
    r = client.post(PATH, json=records)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_input"
    assert [(e["index"], e["field"]) for e in r.json()["detail"]] == [(0, field)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"not json", "body"),
        (b"{}", "readings"),
        (b'{"readings": 5}', "readings"),
        (b"[]", "readings"),
        (b'{"readings": []}', "readings"),
        (b'"records"', "body"),
        (b"7", "body"),
    ],
)
def test_a_body_that_holds_no_records_is_400(client: TestClient, body: bytes, field: str) -> None:
    r = client.post(PATH, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert fields(r) == [field]


def test_the_last_record_of_an_identity_wins_per_metric(client: TestClient) -> None:
    user = "lww-records"
    first = record(user_id=user, heart_rate=60, steps=10)
    second = record(user_id=user, steps=25)  # replaces the steps, not the heart rate
    assert client.post(PATH, json=[first, second]).status_code == 202
    assert client.post(PATH, json=[record(user_id=user, calories=3)]).status_code == 202
    assert client.post(PATH, json=[record(user_id=user, calories=4.5)]).status_code == 202
    assert series(client, "heart-rate", user) == [("2024-01-15T10:00:00Z", 60.0, "device_a")]
    assert series(client, "steps", user) == [("2024-01-15T10:00:00Z", 25, "device_a")]
    assert series(client, "calories", user) == [("2024-01-15T10:00:00Z", 4.5, "device_a")]


def test_more_records_than_the_batch_limit_is_413(settings: Settings) -> None:
    with make_client(settings, max_batch=3) as c:
        # the limit counts records, not the readings they hold
        full = [record(heart_rate=70, steps=1, calories=1)] * 3
        r = c.post(PATH, json=full)
        assert (r.status_code, r.json()["by_metric"]["steps"]) == (202, 3)
        for body in ([*full, record()], {"readings": [*full, "x"]}):
            r = c.post(PATH, json=body)
            assert (r.status_code, fields(r)) == (413, ["readings"])


def test_a_body_over_the_size_limit_is_413(settings: Settings) -> None:
    with make_client(settings, max_body_bytes=2048) as c:
        r = c.post(PATH, json=[record(heart_rate=70)] * 40)
        assert (r.status_code, fields(r)) == (413, ["body"])


def day(n: int, **value: object) -> dict[str, object]:
    moment = datetime(2024, 1, 1, 10, tzinfo=UTC) + timedelta(days=n - 1)
    return record(timestamp=moment.strftime("%Y-%m-%dT%H:%M:%SZ"), **value)


def test_records_may_span_at_most_max_batch_days(settings: Settings) -> None:
    with make_client(settings, max_batch_days=3) as c:
        # the days of all metrics together count
        three = [day(1, heart_rate=70), day(2, steps=4), day(3, calories=1)]
        assert c.post(PATH, json=three).status_code == 202
        r = c.post(PATH, json=[*three, day(4, steps=1)])
        assert (r.status_code, fields(r)) == (400, ["readings"])
        assert "4 UTC days" in r.json()["detail"][0]["reason"]
        # a rejected record's day does not count
        r = c.post(PATH, json=[*three, day(4, steps=1.5)])
        assert (r.status_code, r.json()["rejected"]) == (202, 1)


def test_large_bodies_are_validated_alike(client: TestClient) -> None:
    from service.api.ingest import OFFLOAD_BYTES

    user = "large-" + "x" * 100
    good = [
        record(user_id=user, timestamp=f"2024-01-15T1{i // 600}:{i // 10 % 60:02d}:00Z", steps=i)
        for i in range(3_000)
    ]
    body = json.dumps([*good, record(steps=-1)]).encode()
    assert len(body) > OFFLOAD_BYTES  # validated in a thread
    r = client.post(PATH, content=body)
    assert r.status_code == 202
    assert (r.json()["accepted"], r.json()["rejected"], r.json()["by_metric"]["steps"]) == (
        3_000,
        1,
        3_000,
    )


def test_records_are_counted_as_readings_and_rejections(client: TestClient) -> None:
    def accepted() -> float:
        return sample("hr_readings_accepted_total", endpoint="records")

    def rejected(field: str) -> float:
        return sample("hr_readings_rejected_total", endpoint="records", field=field)

    before = accepted(), rejected("metrics"), rejected("steps"), rejected("body")
    records = [record(heart_rate=70, steps=3), record(), record(steps=0.5, calories=-1)]
    assert client.post(PATH, json=records).status_code == 202
    assert client.post(PATH, content=b"{oops").status_code == 400
    after = accepted(), rejected("metrics"), rejected("steps"), rejected("body")
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 1]


def test_each_request_is_logged_with_its_record_counts(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    with make_client(settings, log_format="json") as c:
        capfd.readouterr()
        c.post(PATH, json=[record(heart_rate=70, steps=3), record()])
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if "service.access" in x]
    assert [(x["route"], x["accepted"], x["rejected"]) for x in lines] == [(PATH, 1, 1)]


def test_every_metric_of_a_request_is_in_the_wal_before_the_202(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.ingest import commit
    from service.storage.wal import list_segments, read_segment

    writes: list[int] = []
    real_write = commit._write
    monkeypatch.setattr(commit, "_write", lambda *a: (writes.append(1), real_write(*a))[1])
    with make_client(settings) as c:
        r = c.post(PATH, json=[record(heart_rate=70, steps=3), record(calories=2.5)])
        assert r.status_code == 202
        segments = list_segments(settings.data_dir / "wal").values()
        frames = [f for paths in segments for p in paths for f in read_segment(p)]
        assert sorted((f.metric, len(f.rows)) for f in frames) == [
            ("calories", 1),
            ("heart_rate", 1),
            ("steps", 1),
        ]
        assert len(writes) == 1  # one group commit for the three metrics


record_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values,
        "device_id": json_values,
        "timestamp": json_values | st.just("2024-01-15T10:00:00Z"),
        "heart_rate": json_values | st.floats(0, 300),
        "steps": json_values | st.integers(-5, 100_005) | st.floats(0, 10),
        "calories": json_values | st.floats(-1, 10_001),
    },
)


@hypothesis_settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(record_like | json_values, max_size=6), wrapped=st.booleans())
def test_no_records_produce_a_server_error(client: TestClient, items, wrapped: bool) -> None:
    r = client.post(PATH, content=json.dumps({"readings": items} if wrapped else items).encode())
    assert r.status_code in (202, 400)
    if r.status_code == 202:
        body = r.json()
        assert body["accepted"] + body["rejected"] == body["total"] == len(items)
        assert sum(body["by_metric"].values()) >= body["accepted"]
