"""The live stream against real gunicorn with 2 workers: events from the other worker,
resume, keep-alive, disconnects and server stop."""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.conftest import request, wait_until

pytestmark = pytest.mark.integration

PATH = "/metrics/heart-rate/stream"


class EventReader:
    """A Server-Sent Events client on one connection (``http.client`` undoes the chunks)."""

    def __init__(self, port: int, query: str, last_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        headers = {} if last_id is None else {"Last-Event-ID": last_id}
        self.conn.request("GET", f"{PATH}?{query}", headers=headers)
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.worker = self.response.getheader("x-served-by")
        self._buffer = b""

    def block(self) -> str | None:
        """The next event or comment block; None at the end of the stream."""
        while b"\n\n" not in self._buffer:
            chunk = self.response.read1(65536)
            if not chunk:
                return None
            self._buffer += chunk
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        return block.decode()

    def event(self, timeout_s: float = 30) -> dict:
        """The next ``bucket`` event (comments skipped): its id and data."""
        deadline = time.monotonic() + timeout_s
        while (block := self.block()) is not None:
            assert time.monotonic() < deadline, "no event in time"
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if fields.get("event") == "bucket":
                return {"id": fields["id"], **json.loads(fields["data"])}
        raise AssertionError("the stream ended")

    def close(self) -> None:
        self.conn.close()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:00Z")


def post(server, user: str, moment: datetime, bpm: float, avoid: str | None = None) -> str:
    """POST one reading, through a worker other than ``avoid``; the worker that took it."""
    reading = {
        "user_id": user,
        "device_id": "device_a",
        "timestamp": iso(moment),
        "heart_rate": bpm,
    }
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            status, headers, _ = request(server, "GET", "/health", conn=conn)
            if avoid is not None and headers["x-served-by"] == avoid:
                continue  # a new connection may land on the other worker
            status, headers, body = request(server, "POST", "/metrics/heart-rate", reading, conn)
            assert status == 202, body
            return str(headers["x-served-by"])
        finally:
            conn.close()
    raise AssertionError("no connection reached another worker")


def series_bucket(server, user: str, start: datetime) -> dict:
    q = f"user_id={user}&start={minute(start)}&end={minute(start + timedelta(minutes=1))}"
    status, _, body = request(server, "GET", f"/metrics/heart-rate?{q}&stats=min,max,count")
    assert status == 200, body
    return body["data"][0]


def test_a_reading_acknowledged_by_the_other_worker_reaches_the_stream(server_factory):
    server = server_factory()
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    post(server, "u1", now, 70)
    stream = EventReader(server.port, "user_id=u1")
    try:
        first = stream.event()  # the last hour, on connect
        assert first["timestamp"] == minute(now)
        assert first["count"] == 1
        # the same bucket, then a new one: both through the worker not holding the stream
        assert post(server, "u1", now + timedelta(seconds=10), 90, avoid=stream.worker)
        changed = stream.event()
        assert int(changed["id"]) > int(first["id"])
        assert {k: v for k, v in changed.items() if k != "id"} == series_bucket(server, "u1", now)
        assert changed["count"] == 2
        assert changed["min"] == 70
        assert changed["max"] == 90
        post(server, "u1", now + timedelta(minutes=1), 60, avoid=stream.worker)
        assert stream.event()["timestamp"] == minute(now + timedelta(minutes=1))
    finally:
        stream.close()


def test_resume_sends_every_bucket_changed_since_the_last_event_id(server_factory):
    server = server_factory(HR_STREAM_KEEPALIVE_S="1")
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    post(server, "u2", now - timedelta(minutes=3), 72)  # changed long before the id
    time.sleep(6)  # longer than the resume's safety margin (RESUME_MARGIN_NS)
    post(server, "u2", now, 70)
    post(server, "u2", now - timedelta(minutes=1), 71)
    stream = EventReader(server.port, "user_id=u2&interval=1m")
    last = [stream.event() for _ in range(3)][-1]["id"]
    stream.close()
    time.sleep(0.01)  # an id is a nanosecond stamp: a later reading is stamped after it
    # while away: a back-filled bucket days ago and a change of a recent one
    old = now - timedelta(days=3)
    post(server, "u2", old, 80)
    post(server, "u2", now + timedelta(seconds=5), 90)
    resumed = EventReader(server.port, "user_id=u2&interval=1m", last_id=last)
    try:
        got = set()
        while (block := resumed.block()) != ": keep-alive":
            assert block is not None
            got.add(json.loads(block.split("data: ", 1)[1])["timestamp"])
        # a bucket changed within the margin before the id may come again; no other
        assert (
            {minute(old), minute(now)}
            <= got
            <= {minute(old), minute(now), minute(now - timedelta(minutes=1))}
        )
        post(server, "u2", now + timedelta(minutes=2), 65)
        assert resumed.event()["timestamp"] == minute(now + timedelta(minutes=2))
    finally:
        resumed.close()
    # an id from elsewhere: the last hour again
    fresh = EventReader(server.port, "user_id=u2", last_id="not-an-id")
    try:
        assert fresh.event()["timestamp"] == minute(now - timedelta(minutes=3))
    finally:
        fresh.close()


def test_an_idle_stream_gets_keep_alive_comments(server_factory):
    server = server_factory(HR_STREAM_KEEPALIVE_S="0.2")
    stream = EventReader(server.port, "user_id=nobody&device_id=d1&interval=1h")
    try:
        assert stream.block() == ": keep-alive"
    finally:
        stream.close()


def _open_streams(server) -> float:
    _, _, text = request(server, "GET", "/metrics")
    found = re.search(r"^hr_streams_open (\S+)$", str(text), re.MULTILINE)
    return float(found.group(1)) if found else -1.0


@pytest.mark.timeout(300)
def test_a_thousand_connects_and_disconnects_leave_no_stream_behind(server_factory):
    server = server_factory()
    post(server, "u3", datetime.now(UTC) - timedelta(minutes=2), 70)
    for _ in range(1000):
        stream = EventReader(server.port, "user_id=u3")
        stream.event()
        stream.close()
    held = EventReader(server.port, "user_id=u3")
    try:
        held.event()
        # only the one still open is counted, once the server has seen the others go
        wait_until(lambda: _open_streams(server) == 1, 30, "the closed streams to go")
    finally:
        held.close()
    wait_until(lambda: _open_streams(server) == 0, 30, "the last stream to go")


def test_a_server_stop_ends_every_stream_cleanly(server_factory):
    # without the streams ending by themselves, each worker would wait this long, then
    # cancel them (and log that it did)
    server = server_factory(GUNICORN_CMD_ARGS="--graceful-timeout 5")
    post(server, "u4", datetime.now(UTC) - timedelta(minutes=2), 70)
    streams = [EventReader(server.port, "user_id=u4") for _ in range(6)]
    for s in streams:
        s.event()
    assert server.stop(signal.SIGTERM, timeout_s=60) == 0
    for s in streams:
        while (block := s.block()) is not None:  # a cut stream raises IncompleteRead here
            assert block.startswith((": keep-alive", "id: "))
        s.close()
    log = server.log.read_text()
    assert "timeout graceful shutdown exceeded" not in log
    assert "Traceback" not in log
