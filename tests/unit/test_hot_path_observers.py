"""The per-request metric tally and the access log: deferred to the end of a loop turn,
and equal to what direct observation and one line per request would have written."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from service.logs import AccessLog
from service.metrics import TurnTally, observe_many

BUCKETS = (0.001, 0.005, 0.01, 1.0)
# below, on and between the bounds, above the last one, zero and negative
VALUES = [0.0005, 0.001, 0.0011, 0.005, 0.0051, 0.01, 0.5, 1.0, 3.0, 0.0, -1.0, 0.001]


def histogram_samples(observe: object) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    h = Histogram("h", "doc", buckets=BUCKETS, registry=registry)
    observe(h)  # type: ignore[operator]
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_equals_observing_each_value() -> None:
    def each(h: Histogram) -> None:
        for v in VALUES:
            h.observe(v)

    expected = histogram_samples(each)
    assert histogram_samples(lambda h: observe_many(h, VALUES)) == expected
    assert expected[("h_bucket", "0.001")] == 5  # 0.0005, 0.001 twice, 0.0 and -1.0
    assert expected[("h_bucket", "+Inf")] == len(VALUES)


def test_tally_writes_at_the_end_of_the_loop_turn() -> None:
    registry = CollectorRegistry()
    c = Counter("c", "doc", ["endpoint"], registry=registry)
    h = Histogram("h", "doc", buckets=BUCKETS, registry=registry)
    tally = TurnTally()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    async def turn() -> tuple[float | None, float | None, float | None, float | None]:
        tally.inc(tally.child(c, "single"))
        tally.inc(tally.child(c, "single"), 2)
        tally.observe(h, 0.002)
        tally.observe(h, 0.5)
        during = value("c_total", endpoint="single"), value("h_count")
        await asyncio.sleep(0)
        return *during, value("c_total", endpoint="single"), value("h_count")

    assert asyncio.run(turn()) == (0.0, 0.0, 3.0, 2.0)
    assert value("h_bucket", le="0.005") == 1
    assert value("h_sum") == pytest.approx(0.502)
    tally.inc(tally.child(c, "batch"), 5)  # no loop in this thread: written at once
    assert value("c_total", endpoint="batch") == 5


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def test_access_lines_of_one_turn_are_written_together() -> None:
    r, w = os.pipe()
    log = AccessLog()
    log.configure(enabled=True, json_lines=True, fd=w)

    async def turn() -> tuple[bytes, bytes]:
        log.request("POST", "/x", "/x", 202, 0.001, "a", "w1", accepted=1)
        log.request("GET", "/y", "unmatched", 200, 0.002, 'q"uote', "w1")
        before = read_all(r)
        await asyncio.sleep(0)
        return before, read_all(r)

    before, after = asyncio.run(turn())
    assert before == b""
    lines = [json.loads(line) for line in after.decode().splitlines()]
    assert [(x["message"], x["status"], x["request_id"]) for x in lines] == [
        ("POST /x 202 1.0ms", 202, "a"),
        ("GET /y 200 2.0ms", 200, 'q"uote'),
    ]
    assert lines[0]["accepted"] == 1
    assert "accepted" not in lines[1]
    assert "rejected" not in lines[0]
    assert list(lines[0]) == [
        *("ts", "level", "logger", "message", "method", "path", "route", "status"),
        *("duration_ms", "request_id", "worker", "accepted"),
    ]
    assert (lines[1]["route"], lines[1]["duration_ms"], lines[1]["worker"]) == (
        "unmatched",
        2.0,
        "w1",
    )
    assert {(x["level"], x["logger"]) for x in lines} == {("info", "service.access")}
    assert all(len(x["ts"]) == 24 and x["ts"].endswith("Z") for x in lines)

    log.configure(enabled=True, json_lines=False, fd=w)
    log.request("GET", "/z", "unmatched", 404, 0.0005, "b", "w1")  # no loop: at once
    text = read_all(r).decode()
    assert text.endswith(" INFO service.access GET /z 404 0.5ms\n")
    os.close(r)
    os.close(w)


def test_generated_request_ids_have_16_hex_digits_before_and_after_the_worker_is_named() -> None:
    from types import SimpleNamespace

    from starlette.datastructures import State

    from service.api.observe import RequestObserver

    async def answer(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    state = State()
    observer = RequestObserver(answer)
    app = SimpleNamespace(state=state)  # what Starlette puts in the scope

    async def request_id() -> str:
        sent: list[dict] = []

        async def send(message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "app": app}
        await observer(scope, None, send)  # type: ignore[arg-type]
        return dict(sent[0]["headers"])[b"x-request-id"].decode()

    async def requests() -> list[str]:
        before = [await request_id(), await request_id()]
        state.worker = "w1"  # what the lifespan sets
        return [*before, await request_id(), await request_id()]

    ids = asyncio.run(requests())
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == 4
