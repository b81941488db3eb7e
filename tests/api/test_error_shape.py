"""Every error status the service sends has one body, as ``application/json``:
``{"error": <code>, "detail": [{"reason": <str>, "field"?: <str>, "index"?: <int>}, ...]}``.

Each case provokes its status in-process. A refusal made below the app, by the
connection's own protocol (431 headers too large, 408 for a header block that never ends),
is written by ``errors.raw_response``: its bytes are checked here too, and real sockets get
it in tests/integration/test_limits.py. ``test_every_service_error_status_has_a_case``
fails for a ``ServiceError`` status without a case.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from service import connections, errors
from service.api import health
from service.app import create_app
from service.auth import keys
from service.config import Settings
from service.errors import RequestTimeout, ServiceError
from tests.api.test_ingest import BATCH, GOOD, ONE

RANGE = {"user_id": "nobody", "start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}


def _fail(*_args: object) -> list[str]:
    raise RuntimeError("a bug in a route")


def _overload(c: TestClient) -> httpx.Response:
    assert c.post(BATCH, json={"readings": [GOOD, {**GOOD, "device_id": "b"}]}).status_code == 202
    return c.post(ONE, json={**GOOD, "device_id": "c"})  # the buffer holds 2 rows


def _forbidden(c: TestClient) -> httpx.Response:
    data_dir = c.app.api.state.context.settings.data_dir  # type: ignore[attr-defined]
    secret = keys.create(data_dir, "gw", ["ingest"], [], 5)  # read at the first request
    return c.get("/users", headers={"Authorization": f"Bearer {secret}"})


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str
    send: Callable[[TestClient], httpx.Response]
    settings: dict[str, object] = field(default_factory=dict)
    # (module, attribute, replacement) patched for the request
    patch: tuple[object, str, object] | None = None


CASES = [
    Case("bad field", 400, "invalid_input", lambda c: c.post(ONE, json={**GOOD, "heart_rate": 5})),
    Case(
        "no valid batch item",
        400,
        "invalid_input",
        lambda c: c.post(BATCH, json={"readings": [1, "x"]}),
    ),
    Case("bad query", 400, "invalid_input", lambda c: c.get(ONE, params={"user_id": "u1"})),
    Case("no key", 401, "unauthorized", lambda c: c.get("/users"), {"auth": "on"}),
    Case("no scope", 403, "forbidden", _forbidden, {"auth": "on"}),
    Case("unknown route", 404, "not_found", lambda c: c.get("/nowhere")),
    Case("no data", 404, "not_found", lambda c: c.get(ONE, params=RANGE)),
    Case("wrong method", 405, "method_not_allowed", lambda c: c.delete(ONE)),
    Case(
        "batch too large",
        413,
        "payload_too_large",
        lambda c: c.post(BATCH, json={"readings": [GOOD] * 4}),
        {"max_batch": 3},
    ),
    Case(
        "body too large",
        413,
        "payload_too_large",
        lambda c: c.post(ONE, content=b" " * 4096),
        {"max_body_bytes": 2048},
    ),
    Case("bug", 500, "internal", lambda c: c.get("/ready"), patch=(health, "_check", _fail)),
    Case("buffer full", 503, "overloaded", _overload, {"max_buffer_rows": 2}),
]
# refused by the connection's protocol before any app runs
RAW_CASES = [
    connections._headers_too_large(),
    RequestTimeout("header block late", [{"field": "headers", "reason": "not received in 10s"}]),
]


def assert_error_body(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"] == "application/json"
    assert_body(r.json(), code)


def assert_body(body: dict[str, object], code: str) -> None:
    assert set(body) == {"error", "detail"}
    assert body["error"] == code
    assert isinstance(body["detail"], list)
    assert body["detail"]
    for item in body["detail"]:
        assert {"reason"} <= set(item) <= {"reason", "field", "index"}, item
        assert isinstance(item["reason"], str)
        assert item["reason"]
        assert isinstance(item.get("field", ""), str)
        assert isinstance(item.get("index", 0), int)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_error_status_has_the_one_body_shape(
    case: Case, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.patch is not None:
        monkeypatch.setattr(*case.patch)
    app = create_app(replace(settings, **case.settings))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        assert_error_body(case.send(client), case.status, case.code)


def test_every_service_error_status_has_a_case() -> None:
    def tree(cls: type[ServiceError]) -> Iterator[type[ServiceError]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from tree(sub)

    sent = {c.status for c in CASES} | {exc.status for exc in RAW_CASES} | {BODY_LATE}
    assert {cls.status for cls in tree(ServiceError)} <= sent


BODY_LATE = 408  # a late body: the app's answer, pinned byte for byte in test_limits.py


def test_a_late_body_has_the_one_body_shape(settings: Settings) -> None:
    from tests.api.test_limits import _post

    status, headers, body = asyncio.run(_post(settings, ONE, [b'{"user_id"']))
    assert status == BODY_LATE
    assert headers[b"content-type"] == b"application/json"
    assert_body(body, "request_timeout")


@pytest.mark.parametrize("exc", RAW_CASES, ids=lambda e: str(e.status))
def test_refusals_below_the_app_have_the_one_body_shape(exc: ServiceError) -> None:
    head, _, raw = errors.raw_response(exc).partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {exc.status} ")
    assert "content-type: application/json" in lines
    assert f"content-length: {len(raw)}" in lines
    assert_body(json.loads(raw), exc.code)
