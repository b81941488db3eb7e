"""Hostile input, in-process: every case gets its status (never a 5xx or a hang), every
error the one JSON shape naming the field, and nothing valid beside it is lost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from tests.api.test_ingest import BATCH, GOOD, ONE

RANGE = "&start=2024-01-15T00:00:00Z&end=2024-01-16T00:00:00Z"
RECORDS = "/readings"
STEPS = "/metrics/steps"
CALORIES = "/metrics/calories"
BASE = {k: v for k, v in GOOD.items() if k != "heart_rate"}
RECORD = {**GOOD, "steps": 120, "calories": 4.5}


def body(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def raw(text: str) -> bytes:
    """A reading whose JSON text is written by hand (escapes json.dumps would not write)."""
    return text.encode("utf-8", "surrogatepass")


def batch(*items: object) -> bytes:
    return json.dumps({"readings": list(items)}).encode()


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def day(n: int) -> dict[str, object]:
    """A good reading on the ``n``-th UTC day from 2024-01-01."""
    moment = datetime(2024, 1, 1, 10, tzinfo=UTC) + timedelta(days=n - 1)
    return {**GOOD, "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    data: bytes | None
    status: int
    field: str | None = None  # the field the error names (for a batch: its first error)


def one(name: str, data: bytes, status: int = 400, field: str | None = None) -> Case:
    return Case(name, "POST", ONE, data, status, field)


def many(name: str, data: bytes, status: int = 400, field: str | None = None) -> Case:
    return Case(name, "POST", BATCH, data, status, field)


def records(name: str, data: bytes, status: int = 400, field: str | None = None) -> Case:
    return Case(name, "POST", RECORDS, data, status, field)


def metric(path: str, value: str, status: int = 400, batch: bool = False) -> Case:
    """A steps or calories reading whose value is the JSON text ``value``."""
    field = path.rsplit("/", 1)[1]
    item = json.dumps(BASE)[:-1] + f', "{field}": {value}}}'
    data = '{"readings":[' + json.dumps({**BASE, field: 1}) + "," + item + "]}" if batch else item
    kind = "batch " if batch else ""
    return Case(
        f"{kind}{field} {value[:20]}",
        "POST",
        path + ("/batch" if batch else ""),
        raw(data),
        status,
        field if status != 202 or batch else None,
    )


def get(name: str, query: str, status: int = 400, field: str | None = None) -> Case:
    return Case(name, "GET", ONE + "?" + query, None, status, field)


TEXT_CASES = [
    ("lone high surrogate", "x\\ud800"),
    ("lone low surrogate", "x\\udc80"),
    ("reversed surrogate pair", "\\udc00\\ud800"),
    ("NUL", "a\\u0000b"),
    ("unit separator", "a\\u001fb"),
    ("newline", "a\\nb"),
    ("carriage return", "a\\rb"),
    ("escape", "\\u001b[31mred"),
    ("DEL", "a\\u007f"),
    ("C1 next line", "a\\u0085"),
    ("line separator", "a\\u2028b"),
    ("paragraph separator", "a\\u2029b"),
]
BAD_TIMES = [
    "2024-02-01T00:00:00Z\\u0000garbage",
    "2024-02-01T00:00:00Zgarbage",
    "2024-02-01T00:00:00+01:00 ",
    "2024-02-01T00:00:00Z\\n",
    "0001-02-01T00:00:00Z",
    "9999-02-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "2101-01-01T00:00:00Z",
    "\\uff12\\uff10\\uff12\\uff14-01-15T10:00:00Z",
    "2024-01-15T10:00:00" + "0" * 10_000,
]

CASES = [
    # ids: printable text only, in the single route, in a batch item, and as a query
    *(
        one(
            f"user_id {n}",
            raw(
                f'{{"user_id":"{t}","device_id":"d","timestamp":'
                f'"2024-01-15T10:00:00Z","heart_rate":70}}'
            ),
            400,
            "user_id",
        )
        for n, t in TEXT_CASES
    ),
    *(
        one(
            f"device_id {n}",
            raw(
                f'{{"user_id":"u","device_id":"{t}","timestamp":'
                f'"2024-01-15T10:00:00Z","heart_rate":70}}'
            ),
            400,
            "device_id",
        )
        for n, t in TEXT_CASES[:6]
    ),
    *(
        many(
            f"batch user_id {n}",
            raw(
                '{"readings":[' + json.dumps(GOOD) + f',{{"user_id":"{t}",'
                '"device_id":"d","timestamp":"2024-01-15T10:00:00Z",'
                '"heart_rate":70}]}'
            ),
            202,
            "user_id",
        )
        for n, t in TEXT_CASES[:6]
    ),
    # timestamps: the whole text, years 1970 to 2100
    *(
        one(
            f"timestamp {t[:24]!r}",
            raw(json.dumps(GOOD)[:-1].replace('"2024-01-15T10:00:00Z"', f'"{t}"') + "}"),
            400,
            "timestamp",
        )
        for t in BAD_TIMES
    ),
    *(
        many(
            f"batch timestamp {t[:24]!r}",
            raw(
                '{"readings":['
                + json.dumps(GOOD)
                + ","
                + json.dumps(GOOD).replace('"2024-01-15T10:00:00Z"', f'"{t}"')
                + "]}"
            ),
            202,
            "timestamp",
        )
        for t in BAD_TIMES[:5]
    ),
    # bytes that are not UTF-8
    one(
        "invalid start byte",
        b'{"user_id":"\xff","device_id":"d","timestamp":"2024-01-15T10:00:00Z","heart_rate":70}',
        400,
        "body",
    ),
    one("overlong encoding", b'{"user_id":"\xc0\xaf"}', 400, "body"),
    one("truncated sequence", b'{"user_id":"\xe2\x82"}', 400, "body"),
    one("encoded surrogate", b'{"user_id":"\xed\xa0\x80"}', 400, "body"),
    one("latin-1 text", '{"user_id":"Jos\u00e9"}'.encode("latin-1"), 400, "body"),
    many("batch invalid UTF-8", b'{"readings":[{"user_id":"\xfe"}]}', 400, "body"),
    # nesting
    one("depth 65", nested(65).encode(), 400, "body"),
    one("depth 1000", nested(1000).encode(), 400, "body"),
    one("depth 100000", nested(100_000).encode(), 400, "body"),
    one("deep objects", ('{"a":' * 200 + "1" + "}" * 200).encode(), 400, "body"),
    one("deep field", ('{"user_id":' + nested(70) + "}").encode(), 400, "body"),
    one("deep unknown field", ('{"x":' + "[" * 2000).encode(), 400, "body"),
    many("batch deep unknown field", ('{"readings":[],"x":' + "[" * 2000).encode(), 400, "body"),
    one("depth 64 in a field", ('{"user_id":' + nested(63) + "}").encode(), 400, "user_id"),
    one("unclosed depth 500", ("[" * 500).encode(), 400, "body"),
    many("batch depth 1000", ('{"readings":' + nested(1000) + "}").encode(), 400, "body"),
    many("batch deep item", ('{"readings":[' + nested(80) + "]}").encode(), 400, "body"),
    # brackets inside strings are text, not nesting
    one("brackets in a string", body(user_id="[" * 100, heart_rate=1), 400, "heart_rate"),
    # not a reading at all
    one("empty body", b"", 400, "body"),
    one("whitespace", b"  \n ", 400, "body"),
    one("null", b"null", 400, "reading"),
    one("array", b"[]", 400, "reading"),
    one("string", b'"reading"', 400, "reading"),
    one("number", b"123", 400, "reading"),
    one("byte order mark", b"\xef\xbb\xbf" + body(), 400, "body"),
    one("truncated JSON", body()[:-5], 400, "body"),
    one("trailing garbage", body() + b"garbage", 400, "body"),
    one("NaN", raw(json.dumps(GOOD).replace("75", "NaN")), 400, "heart_rate"),
    one("Infinity", raw(json.dumps(GOOD).replace("75", "Infinity")), 400, "heart_rate"),
    one("-Infinity", raw(json.dumps(GOOD).replace("75", "-Infinity")), 400, "heart_rate"),
    one("1e309", raw(json.dumps(GOOD).replace("75", "1e309")), 400, "heart_rate"),
    one("10**400", raw(json.dumps(GOOD).replace("75", "1" + "0" * 400)), 400, "heart_rate"),
    one("huge user_id", body(user_id="u" * 100_000), 400, "user_id"),
    one("long emoji user_id", body(user_id="\U0001f600" * 129), 400, "user_id"),
    one("user_id object", body(user_id={"$gt": ""}), 400, "user_id"),
    one(
        "duplicate key, bad last",
        raw(json.dumps(GOOD)[:-1] + ',"user_id":"a\\u0000"}'),
        400,
        "user_id",
    ),
    # valid, however odd
    one("unicode ids", body(user_id="Jos\u00e9 Garc\u00eda", device_id="\u65e5\u672c"), 202),
    one("emoji with joiner", body(user_id="\U0001f468\u200d\U0001f4bb"), 202),
    one("huge integer user_id", raw(json.dumps(GOOD).replace('"u1"', str(2**70))), 202),
    one("unknown extra field", body(extra={"deep": [1, [2]]}), 202),
    one("duplicate key, good last", raw(json.dumps(GOOD)[:-1] + ',"user_id":"u2"}'), 202),
    one("year 1970", body(timestamp="1970-01-01T00:00:00Z"), 202),
    one("year 2100", body(timestamp="2100-12-31T23:59:59.999Z"), 202),
    # batches
    many("readings not a list", b'{"readings":{"a":1}}', 400, "readings"),
    many("readings missing", b'{"reading":[]}', 400, "readings"),
    many("body a list", b"[]", 400, "body"),
    many("readings empty", b'{"readings":[]}', 400, "readings"),
    many("item null", batch(GOOD, None), 202, "reading"),
    many("item a list", batch(GOOD, [GOOD]), 202, "reading"),
    many(
        "all items bad",
        batch({**GOOD, "heart_rate": 1}, {**GOOD, "user_id": ""}),
        400,
        "heart_rate",
    ),
    many("32 UTC days", batch(*(day(n) for n in range(1, 33))), 400, "readings"),
    many(
        "thousands of days",
        batch(*(day(n) for n in range(1, 10_001, 3))),
        400,
        "readings",
    ),
    many("31 UTC days", batch(*(day(n) for n in range(1, 32))), 202),
    many("over the batch limit", batch(*([GOOD] * 10_001)), 413, "readings"),
    many(
        "a bad 32nd day does not count",
        batch(*(day(n) for n in range(1, 32)), {**day(32), "heart_rate": 1}),
        202,
        "heart_rate",
    ),
    # steps and calories: numbers in bounds, whole steps
    *(metric(STEPS, v) for v in ("40.5", "-1", "100001", "true", '"40"', "null", "NaN", "1e309")),
    *(metric(STEPS, v, 202) for v in ("0", "100000", "40.0", "4e1", "-0.0")),
    metric(STEPS, "40.5", 202, batch=True),
    metric(STEPS, "Infinity", 202, batch=True),
    *(metric(CALORIES, v) for v in ("-0.01", "10000.5", "false", '"4.5"', "[]", "{}")),
    *(metric(CALORIES, v, 202) for v in ("0", "10000", "4.25")),
    metric(CALORIES, "-Infinity", 202, batch=True),
    # records of several metrics: a bad field rejects its record, the others are kept
    records("record no metric", json.dumps([RECORD, BASE]).encode(), 202, "metrics"),
    records("records all without metric", json.dumps([BASE, BASE]).encode(), 400, "metrics"),
    records(
        "record fractional steps",
        json.dumps([RECORD, {**RECORD, "steps": 0.5}]).encode(),
        202,
        "steps",
    ),
    records(
        "record null metric",
        json.dumps([RECORD, {**BASE, "calories": None}]).encode(),
        202,
        "calories",
    ),
    records("record a list", json.dumps({"readings": [RECORD, [RECORD]]}).encode(), 202, "record"),
    records(
        "record NaN", raw("[" + json.dumps(RECORD).replace("4.5", "NaN") + "]"), 400, "calories"
    ),
    *(
        records(
            f"record user_id {n}",
            raw(
                "[" + json.dumps(RECORD) + "," + json.dumps(RECORD).replace('"u1"', f'"{t}"') + "]"
            ),
            202,
            "user_id",
        )
        for n, t in TEXT_CASES[:6]
    ),
    records("records invalid UTF-8", b'[{"user_id":"\xfe"}]', 400, "body"),
    records("records depth 1000", nested(1000).encode(), 400, "body"),
    records(
        "records deep unknown field", ('{"readings":[],"x":' + "[" * 2000).encode(), 400, "body"
    ),
    records("records a string", b'"records"', 400, "body"),
    records("records readings not a list", b'{"readings":{"a":1}}', 400, "readings"),
    records("records empty", b"[]", 400, "readings"),
    records(
        "records 32 UTC days",
        json.dumps([{**day(n), "steps": 1} for n in range(1, 33)]).encode(),
        400,
        "readings",
    ),
    records(
        "records over the batch limit", json.dumps([RECORD] * 10_001).encode(), 413, "readings"
    ),
    # query parameters
    get("query user_id NUL", "user_id=a%00" + RANGE, 400, "user_id"),
    get("query user_id newline", "user_id=a%0Ab" + RANGE, 400, "user_id"),
    get("query user_id escape", "user_id=%1B%5B2J" + RANGE, 400, "user_id"),
    get("device_id DEL", "user_id=u1&device_id=d%7F" + RANGE, 400, "device_id"),
    get("user_id too long", "user_id=" + "u" * 129 + RANGE, 400, "user_id"),
    get("user_id missing", RANGE[1:], 400, "user_id"),
    get(
        "start garbage",
        "user_id=u1&start=2024-01-15T00:00:00Zx&end=2024-01-16T00:00:00Z",
        400,
        "start",
    ),
    get(
        "start NUL",
        "user_id=u1&start=2024-01-15T00:00:00Z%00&end=2024-01-16T00:00:00Z",
        400,
        "start",
    ),
    get(
        "start year 1",
        "user_id=u1&start=0001-01-15T00:00:00Z&end=2024-01-16T00:00:00Z",
        400,
        "start",
    ),
    get(
        "end year 9999",
        "user_id=u1&start=2024-01-15T00:00:00Z&end=9999-01-16T00:00:00Z",
        400,
        "end",
    ),
    get(
        "end before start",
        "user_id=u1&start=2024-01-16T00:00:00Z&end=2024-01-15T00:00:00Z",
        400,
        "end",
    ),
    get(
        "huge start",
        "user_id=u1&start=" + "9" * 10_000 + "&end=2024-01-16T00:00:00Z",
        400,
        "start",
    ),
    get("start as a list", "user_id=u1&start=a&start=b&end=2024-01-16T00:00:00Z", 400, "start"),
    get("no data", "user_id=nobody" + RANGE, 404, "user_id"),
    # routes and methods
    Case("unknown path", "GET", "/nope", None, 404),
    Case("path with newline", "GET", "/metrics/heart-rate%0Aforged", None, 404),
    Case("wrong method", "PUT", ONE, body(), 405),
    Case("POST to ready", "POST", "/ready", b"", 405),
]


@pytest.fixture(scope="module")
def hostile_client(tmp_path_factory) -> TestClient:
    from service.app import create_app
    from service.config import Settings

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        flush_interval_s=3600,
        recovery_interval_s=3600,
        access_log=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.post(ONE, content=body())  # the reading the 404 case does not find
        yield client


def test_there_are_at_least_80_cases() -> None:
    assert len(CASES) >= 80
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_gets_its_status_and_names_the_field(hostile_client, case: Case) -> None:
    r = hostile_client.request(
        case.method, case.path, content=case.data, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == case.status, r.text[:300]
    answer = r.json()
    if case.status >= 400:
        assert set(answer) == {"error", "detail"}
        assert isinstance(answer["error"], str)
        assert answer["detail"]
        assert all(item["reason"] for item in answer["detail"])
        found = [item.get("field") for item in answer["detail"]]
    else:
        found = [item["field"] for item in answer.get("errors", [])]
    if case.field is not None:
        assert found[0] == case.field, answer
    if case.status == 202 and (case.path.endswith("/batch") or case.path == RECORDS):
        assert answer["accepted"] >= 1  # the good readings beside the bad ones are kept


def test_good_readings_beside_hostile_ones_are_each_stored_once(hostile_client) -> None:
    user = "beside-hostile"
    good = [
        {**GOOD, "user_id": user, "timestamp": f"2024-01-15T11:{i:02d}:00Z", "heart_rate": 60 + i}
        for i in range(10)
    ]
    hostile = raw(
        '{"user_id":"x\\ud800","device_id":"d","timestamp":"2024-01-15T11:00:00Z","heart_rate":70}'
    )
    for reading in good:
        assert hostile_client.post(ONE, content=hostile).status_code == 400
        assert hostile_client.post(ONE, content=json.dumps(reading).encode()).status_code == 202
    r = hostile_client.get(f"{ONE}?user_id={user}{RANGE}")
    assert r.status_code == 200
    assert [b["heart_rate"] for b in r.json()["data"]] == [60.0 + i for i in range(10)]
