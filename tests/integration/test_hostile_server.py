"""Hostile input against real gunicorn: raw bytes on a socket, each answer bounded by a
client timeout, and every valid reading sent beside them stored exactly once."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from ops.server import Server
from tests.integration.conftest import request
from tests.integration.test_server import PATH, reading, series

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT_S = 30  # a hang fails the case instead of the suite

SURROGATE = (
    b'{"user_id":"x\\ud800","device_id":"d","timestamp":"2024-01-15T10:00:00Z","heart_rate":70}'
)
CASES: list[tuple[str, str, bytes, int]] = [
    ("POST", PATH, SURROGATE, 400),
    ("POST", PATH, SURROGATE.replace(b'"d"', b'"d\\udfff"').replace(b"x\\ud800", b"x"), 400),
    ("POST", PATH + "/batch", b'{"readings":[' + SURROGATE + b"]}", 400),
    ("POST", PATH, b"[" * 1000 + b"]" * 1000, 400),
    ("POST", PATH, b"[" * 100_000, 400),
    ("POST", PATH, b'{"user_id":"\xff\xfe","device_id":"d"}', 400),
    ("POST", PATH + "/batch", b'{"readings":[{"user_id":"\xc0\xaf"}]}', 400),
    ("POST", PATH, json.dumps(reading("a\x00b", 0, 70)).encode(), 400),
    (
        "POST",
        PATH,
        json.dumps({**reading("t", 0, 70), "timestamp": "2024-02-01T00:00:00Z\x00x"}).encode(),
        400,
    ),
    (
        "POST",
        PATH,
        json.dumps({**reading("t", 0, 70), "timestamp": "9999-02-01T00:00:00Z"}).encode(),
        400,
    ),
    (
        "POST",
        PATH + "/batch",
        json.dumps(
            {
                "readings": [
                    {**reading("days", 0, 70), "timestamp": f"{1980 + n}-01-01T00:00:00Z"}
                    for n in range(40)
                ]
            }
        ).encode(),
        400,
    ),
    ("GET", PATH + "?user_id=a%00&start=2024-01-15T00:00:00Z&end=2024-01-16T00:00:00Z", b"", 400),
]


def send(server: Server, method: str, path: str, data: bytes) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT_S)
    try:
        conn.request(method, path, body=data or None, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_hostile_requests_are_answered_and_valid_ones_beside_them_kept(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_INTERVAL_S="3600")
    for method, path, data, status in CASES:
        got, body = send(server, method, path, data)
        assert got == status, (path, data[:80], body)
        assert set(body) == {"error", "detail"}  # type: ignore[arg-type]
    # 10 unencodable readings among 600 valid ones, sent at once: before, a group commit
    # holding one of them never answered, and valid readings in its group were lost
    jobs = [("ok", i) for i in range(600)] + [("bad", i) for i in range(10)]
    jobs.sort(key=lambda job: (job[1] * 61) % 600)

    def post(job: tuple[str, int]) -> int:
        kind, i = job
        data = (
            SURROGATE if kind == "bad" else json.dumps(reading("mixed", i, 60 + i % 100)).encode()
        )
        return send(server, "POST", PATH, data)[0]

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, jobs))
    assert statuses.count(202) == 600
    assert statuses.count(400) == 10
    assert len(series(server, "mixed")) == 600
    assert request(server, "GET", "/ready")[0] == 200
    assert server.stop() == 0
    # after a restart from the same data: each reading exactly once
    again = server_factory(workers=2, data_dir=server.data_dir)
    assert len(series(again, "mixed")) == 600
