"""Body deadline over in-process ASGI: a late or trickled body is a 408 on every body route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace

import pytest

from service.api.ingest import OFFLOAD_BYTES
from service.api.limits import BodyDeadline
from service.app import create_app
from service.config import ConfigError, Settings
from service.errors import RequestTimeout

ONE = "/metrics/heart-rate"
BATCH = "/metrics/heart-rate/batch"
GOOD = b'{"user_id":"u1","device_id":"device_a","timestamp":"2024-01-15T10:00:00Z","heart_rate":75}'
DEADLINE_S = 0.3
BOUND_S = 20  # every scenario ends well before this, or the test fails


def _stalled(chunks: Iterable[bytes], gap_s: float | None) -> Callable[[], Awaitable[dict]]:
    """A ``receive``: ``chunks``, then nothing ever again or (``gap_s``) a byte per ``gap_s``.

    Like a server's, it may be called again after a read of it was cancelled.
    """
    pending = list(chunks)

    async def receive() -> dict:
        if pending:
            body = pending.pop(0)
        elif gap_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(gap_s)
            body = b" "
        return {"type": "http.request", "body": body, "more_body": True}

    return receive


async def _serve(
    settings: Settings, path: str, receive: Callable[[], Awaitable[dict]]
) -> list[dict]:
    """POST ``path`` to a started app reading the body from ``receive``; what it sent."""
    app = create_app(settings)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    async with app.api.router.lifespan_context(app.api):
        await asyncio.wait_for(app(scope, receive, send), BOUND_S)  # type: ignore[arg-type]
    return sent


async def _post(
    settings: Settings, path: str, chunks: Iterable[bytes], gap_s: float | None = None
) -> tuple[int, dict[bytes, bytes], dict[str, object]]:
    sent = await _serve(replace(settings, body_timeout_s=DEADLINE_S), path, _stalled(chunks, gap_s))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(body)


def _assert_timeout(answer: tuple[int, dict[bytes, bytes], dict[str, object]]) -> None:
    status, headers, body = answer
    assert status == 408, body
    assert body == {
        "error": "request_timeout",
        "detail": [{"field": "body", "reason": f"not received within {DEADLINE_S:g}s"}],
    }
    assert headers[b"content-type"] == b"application/json"
    # the rest of the body may still come: it must not be read as a next request
    assert headers[b"connection"] == b"close"


@pytest.mark.parametrize("path", [ONE, BATCH])
def test_a_body_that_stops_arriving_is_a_408(settings: Settings, path: str) -> None:
    _assert_timeout(asyncio.run(_post(settings, path, [GOOD[:20]])))


def test_a_body_that_never_starts_is_a_408(settings: Settings) -> None:
    _assert_timeout(asyncio.run(_post(settings, ONE, [])))


def test_a_trickled_body_is_a_408_at_the_deadline_not_per_read(settings: Settings) -> None:
    # a byte every 50 ms: a per-read timeout of 300 ms would never fire
    _assert_timeout(asyncio.run(_post(settings, ONE, [GOOD[:20]], gap_s=0.05)))


def test_a_large_batch_read_by_the_route_itself_is_a_408(settings: Settings) -> None:
    # over OFFLOAD_BYTES the shortcut hands the body to the FastAPI route, which reads the rest
    first = b"[" + b" " * (OFFLOAD_BYTES + 1)
    answer = asyncio.run(_post(settings, BATCH, [first]))
    _assert_timeout(answer)
    assert answer[1][b"x-request-id"]  # still observed like every other request


def test_reads_after_the_whole_body_wait_past_the_deadline() -> None:
    # Starlette waits on receive() for a disconnect while it streams a response
    messages = [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
    ]
    seen: list[dict] = []

    async def receive() -> dict:
        if len(messages) == 1:
            await asyncio.sleep(DEADLINE_S * 2)
        return messages.pop(0)

    async def app(scope, receive, send) -> None:
        seen.extend([await receive(), await receive()])

    bounded = BodyDeadline(app, DEADLINE_S)
    asyncio.run(asyncio.wait_for(bounded({"type": "http"}, receive, None), BOUND_S))  # type: ignore[arg-type]
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


def test_any_awaitable_receive_is_bounded() -> None:
    # ASGI asks only for an awaitable: here a future that is never resolved
    async def scenario() -> None:
        never = asyncio.get_running_loop().create_future()

        async def app(scope, receive, send) -> None:
            await receive()

        bounded = BodyDeadline(app, DEADLINE_S)
        await bounded({"type": "http"}, lambda: never, None)  # type: ignore[arg-type]

    with pytest.raises(RequestTimeout, match=r"body not received within 0\.3s"):
        asyncio.run(asyncio.wait_for(scenario(), BOUND_S))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "HR_BODY_TIMEOUT_S='soon' is not a number"),
        ("0", "HR_BODY_TIMEOUT_S='0' is below the minimum 0.01"),
        ("inf", "HR_BODY_TIMEOUT_S='inf' is above the maximum 3600"),
    ],
)
def test_a_bad_body_timeout_names_its_variable(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"HR_BODY_TIMEOUT_S": value})


def test_timeouts_default_and_read_from_the_environment() -> None:
    assert (Settings().body_timeout_s, Settings().header_timeout_s) == (30.0, 10.0)
    read = Settings.from_env({"HR_BODY_TIMEOUT_S": "2.5", "HR_HEADER_TIMEOUT_S": "4"})
    assert (read.body_timeout_s, read.header_timeout_s) == (2.5, 4.0)


async def _post_then_leave(settings: Settings, path: str, first: bytes) -> tuple[int, int]:
    """Send part of a body, then disconnect; (the status the app answered, readings it
    counted as rejected)."""
    from service import metrics

    messages = [
        {"type": "http.request", "body": first, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    def rejected() -> float:
        samples = (s for m in metrics.READINGS_REJECTED.collect() for s in m.samples)
        return sum(s.value for s in samples if s.name.endswith("_total"))

    before = rejected()
    sent = await _serve(settings, path, receive)
    return sent[0]["status"], int(rejected() - before)


@pytest.mark.parametrize("path", [ONE, BATCH])
def test_a_client_that_leaves_mid_body_is_no_bad_request(settings: Settings, path: str) -> None:
    # a body cut short is not validated as if whole: no 400, no rejected readings
    first = b'{"readings":[' + GOOD[:40] if path == BATCH else GOOD[:40]
    status, rejected = asyncio.run(_post_then_leave(settings, path, first))
    assert (status, rejected) == (499, 0)
