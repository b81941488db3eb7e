"""Ingestion over in-process ASGI: statuses, error bodies, limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.config import Settings
from tests.conftest import make_client

ONE = "/metrics/heart-rate"
BATCH = "/metrics/heart-rate/batch"
GOOD = {
    "user_id": "u1",
    "device_id": "device_a",
    "timestamp": "2024-01-15T10:00:00Z",
    "heart_rate": 75,
}


GOOD_ACK = {"status": "accepted"}


def reading(**changes: object) -> dict[str, object]:
    return {**GOOD, **changes}


def fields(response) -> list[str]:
    return [item.get("field") for item in response.json()["detail"]]


def test_single_reading_is_accepted(client: TestClient) -> None:
    r = client.post(ONE, json=GOOD)
    assert r.status_code == 202
    assert r.json() == {"status": "accepted"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"user_id": True}, "user_id"),
        ({"user_id": 1.5}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"device_id": ""}, "device_id"),
        ({"device_id": "d" * 65}, "device_id"),
        ({"device_id": 7}, "device_id"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": "2024-01-15"}, "timestamp"),
        ({"timestamp": "2024-13-01T00:00:00Z"}, "timestamp"),
        ({"timestamp": 1705312800}, "timestamp"),
        ({"heart_rate": 29.99}, "heart_rate"),
        ({"heart_rate": 220.01}, "heart_rate"),
        ({"heart_rate": "75"}, "heart_rate"),
        ({"heart_rate": True}, "heart_rate"),
        ({"heart_rate": None}, "heart_rate"),
    ],
)
def test_each_invalid_field_is_named(client: TestClient, change, field) -> None:
    single = client.post(ONE, json=reading(**change))
    assert single.status_code == 400
    assert single.json()["error"] == "invalid_input"
    assert fields(single) == [field]
    assert all(item["reason"] for item in single.json()["detail"])
    batch = client.post(BATCH, json={"readings": [GOOD, reading(**change)]})
    assert batch.status_code == 202
    body = batch.json()
    assert (body["accepted"], body["rejected"], body["total"]) == (1, 1, 2)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, field)]


@pytest.mark.parametrize("name", ["user_id", "device_id", "timestamp", "heart_rate"])
def test_missing_field_is_named(client: TestClient, name: str) -> None:
    body = dict(GOOD)
    del body[name]
    r = client.post(ONE, json=body)
    assert r.status_code == 400
    assert r.json()["detail"] == [{"field": name, "reason": "field required"}]


def test_every_bad_field_of_a_reading_is_reported(client: TestClient) -> None:
    r = client.post(ONE, json={"user_id": "", "device_id": 1, "heart_rate": 500})
    assert r.status_code == 400
    assert sorted(fields(r)) == ["device_id", "heart_rate", "timestamp", "user_id"]


@pytest.mark.parametrize("value", [30, 220, 30.0, 219.9])
def test_bounds_are_inclusive(client: TestClient, value: float) -> None:
    assert client.post(ONE, json=reading(heart_rate=value)).status_code == 202


def test_integer_user_id_is_stored_as_its_decimal_string(client: TestClient) -> None:
    assert client.post(ONE, json=reading(user_id=42)).status_code == 202
    r = client.get(
        ONE,
        params={"user_id": "42", "start": "2024-01-15T10:00:00Z", "end": "2024-01-15T10:01:00Z"},
    )
    assert r.status_code == 200
    assert r.json()["user_id"] == "42"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"heart_rate": NaN}',
        b'{"user_id":"u","device_id":"d","timestamp":"2024-01-15T10:00:00Z","heart_rate":1e309}',
        b"\xff\xfe\x00",
        b"[" * 50_000,
        b'"just a string"',
    ],
)
def test_malformed_single_bodies_get_400(client: TestClient, body: bytes) -> None:
    r = client.post(ONE, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_input"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b"{}", "readings"),
        (b'{"readings": 5}', "readings"),
        (b'{"readings": []}', "readings"),
        (b'{"readings": [1, "x"]}', "reading"),
    ],
)
def test_malformed_batches_get_400(client: TestClient, body: bytes, field: str) -> None:
    r = client.post(BATCH, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert field in fields(r)


def test_out_of_range_number_rejects_only_its_reading(client: TestClient) -> None:
    good = json.dumps(GOOD).encode()
    bad = json.dumps(reading(heart_rate=1)).replace("1}", "1e400}").encode()
    body = b'{"readings": [' + good + b"," + bad + b"]}"
    r = client.post(BATCH, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 202
    assert r.json()["errors"] == [
        {"index": 1, "field": "heart_rate", "reason": "must be between 30 and 220"}
    ]


def test_any_content_type_is_read_as_json(client: TestClient) -> None:
    r = client.post(ONE, content=json.dumps(GOOD), headers={"content-type": "text/plain"})
    assert r.status_code == 202
    r = client.post(ONE, content=b"<xml/>", headers={"content-type": "application/xml"})
    assert r.status_code == 400


def test_batch_over_the_limit_is_413(settings: Settings) -> None:
    with make_client(settings, max_batch=3) as c:
        r = c.post(BATCH, json={"readings": [GOOD] * 4})
        assert r.status_code == 413
        assert fields(r) == ["readings"]
        assert c.post(BATCH, json={"readings": [GOOD] * 3}).status_code == 202


def test_body_over_the_limit_is_413(settings: Settings) -> None:
    with make_client(settings, max_body_bytes=2048) as c:
        r = c.post(BATCH, json={"readings": [GOOD] * 40})
        assert r.status_code == 413
        assert fields(r) == ["body"]
        padded = json.dumps(GOOD).encode() + b" " * 3000  # a valid reading, too long
        r = c.post(ONE, content=padded)
        assert (r.status_code, fields(r)) == (413, ["body"])
        r = c.post(ONE, content=iter([padded[:1500], padded[1500:]]))  # no content-length
        assert (r.status_code, fields(r)) == (413, ["body"])


def test_validation_status_is_never_422(client: TestClient) -> None:
    r = client.get(ONE, params={"start": "2024-01-15T10:00:00Z"})
    assert r.status_code == 400
    assert set(fields(r)) == {"user_id", "end"}


def test_full_buffer_answers_503_with_retry_after(settings: Settings) -> None:
    with make_client(settings, max_buffer_rows=2) as c:
        assert c.post(BATCH, json={"readings": [GOOD, reading(device_id="b")]}).status_code == 202
        r = c.post(ONE, json=reading(device_id="c"))
        assert r.status_code == 503
        assert r.headers["retry-after"].isdigit()
        assert r.json()["error"] == "overloaded"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
reading_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values | st.text(),
        "device_id": json_values | st.text(),
        "timestamp": json_values | st.datetimes().map(lambda d: d.isoformat()),
        "heart_rate": json_values | st.floats(0, 300),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=json_values | reading_like | st.binary(max_size=64),
    batch=st.lists(reading_like | json_values, max_size=6),
)
def test_no_input_produces_a_server_error(client: TestClient, body, batch) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert client.post(ONE, content=raw).status_code in (202, 400)
    r = client.post(BATCH, content=json.dumps({"readings": batch}).encode())
    assert r.status_code in (202, 400)
    if r.status_code == 202:
        assert r.json()["accepted"] + r.json()["rejected"] == len(batch)


def sample(name: str, **labels: str) -> float:
    """The sum of the in-process samples of ``name`` whose labels include ``labels``."""
    from prometheus_client import REGISTRY

    return sum(
        s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def test_rejections_are_counted_once_per_reading_by_first_field(client: TestClient) -> None:
    def count(endpoint: str, field: str) -> float:
        return sample("hr_readings_rejected_total", endpoint=endpoint, field=field)

    before = count("batch", "user_id"), count("batch", "heart_rate"), count("batch", "body")
    bad = reading(user_id="", heart_rate=1)  # two bad fields, one reading
    r = client.post(BATCH, json={"readings": [GOOD, bad, bad]})
    assert r.json()["rejected"] == 2
    client.post(BATCH, content=b"{oops", headers={"content-type": "application/json"})
    after = count("batch", "user_id"), count("batch", "heart_rate"), count("batch", "body")
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (2, 0, 1)


def test_the_single_reading_shortcut_is_observed_like_the_route(client: TestClient) -> None:
    def requests(status: str) -> float:
        return sample(
            "hr_http_request_duration_seconds_count",
            method="POST",
            route=ONE,
            status=status,
        )

    ok, bad = requests("202"), requests("400")
    accepted = sample("hr_readings_accepted_total", endpoint="single")
    lag = sample("hr_read_after_write_lag_seconds_count")
    r = client.post(ONE, json=reading(user_id="shortcut"), headers={"X-Request-ID": "req-7"})
    assert (r.status_code, r.json(), r.headers["x-request-id"]) == (202, GOOD_ACK, "req-7")
    assert r.headers["content-type"] == "application/json"
    assert client.post(ONE, json=reading(heart_rate=10)).status_code == 400
    assert (requests("202") - ok, requests("400") - bad) == (1, 1)
    assert sample("hr_readings_accepted_total", endpoint="single") - accepted == 1
    assert sample("hr_read_after_write_lag_seconds_count") - lag == 1
    series = client.get(
        ONE,
        params={
            "user_id": "shortcut",
            "start": "2024-01-15T00:00:00Z",
            "end": "2024-01-16T00:00:00Z",
        },
    )
    assert series.json()["data"] == [
        {"timestamp": "2024-01-15T10:00:00Z", "heart_rate": 75.0, "device_id": "device_a"}
    ]


def test_valid_batches_are_answered_like_the_route(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.api import accept, ingest

    routed: list[int] = []
    validate = ingest.validate_batch

    def spy(body: bytes, *args):
        routed.append(len(body))
        return validate(body, *args)

    monkeypatch.setattr(ingest, "validate_batch", spy)

    def requests() -> float:
        return sample(
            "hr_http_request_duration_seconds_count", method="POST", route=BATCH, status="202"
        )

    before, accepted = requests(), sample("hr_readings_accepted_total", endpoint="batch")
    small = [
        reading(user_id=7, timestamp=f"2024-01-15T11:00:0{i}Z", heart_rate=rate)
        for i, rate in enumerate((60, 70, 110))
    ]
    # over OFFLOAD_BYTES: the route validates it (in a thread)
    large = [reading(user_id="big" + "x" * 100, device_id="d" * 64)] * 2_000
    answers = [client.post(BATCH, json={"readings": rows}) for rows in (small, large)]
    assert len(routed) == 1  # the small batch skipped the route, the large one did not
    assert routed[0] > ingest.OFFLOAD_BYTES
    for r, rows in zip(answers, (small, large), strict=True):
        assert r.status_code == 202
        assert r.headers["content-type"] == "application/json"
        n = len(rows)
        assert r.json() == {
            "status": "accepted",
            "accepted": n,
            "rejected": 0,
            "total": n,
            "errors": [],
        }
    assert answers[0].content == accept.batch_accepted_body(3, 0, 3, [])
    assert requests() - before == 2
    assert sample("hr_readings_accepted_total", endpoint="batch") - accepted == 2_003
    series = client.get(
        ONE, params={"user_id": "7", "start": "2024-01-15T11:00:00Z", "end": "2024-01-15T11:01:00Z"}
    )
    assert series.json()["data"] == [  # the mean of all three
        {"timestamp": "2024-01-15T11:00:00Z", "heart_rate": 80.0, "device_id": "device_a"}
    ]


def test_a_body_sent_in_chunks_is_read_whole(client: TestClient) -> None:
    raw = json.dumps(reading(user_id="chunks")).encode()
    r = client.post(ONE, content=iter([raw[:10], raw[10:30], raw[30:]]))
    assert r.status_code == 202
    bad = json.dumps(reading(heart_rate=500)).encode()
    r = client.post(ONE, content=iter([bad[:10], bad[10:]]))
    assert (r.status_code, fields(r)) == (400, ["heart_rate"])


def test_each_request_gets_one_access_line_with_its_id(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    with make_client(settings, log_format="json") as c:
        capfd.readouterr()
        ok = c.post(ONE, json=reading(user_id="logged"), headers={"X-Request-ID": "log-1"})
        bad = c.post(BATCH, json={"readings": [GOOD, reading(heart_rate=5)]})
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if "service.access" in x]
    assert [
        (x["request_id"], x["status"], x.get("accepted"), x.get("rejected")) for x in lines
    ] == [
        ("log-1", 202, 1, None),
        (bad.headers["x-request-id"], 202, 1, 1),
    ]
    assert ok.headers["x-request-id"] == "log-1"
    assert {x["route"] for x in lines} == {ONE, BATCH}
    with make_client(settings, access_log=False) as c:
        capfd.readouterr()
        c.post(ONE, json=GOOD)
    assert "service.access" not in capfd.readouterr().err
