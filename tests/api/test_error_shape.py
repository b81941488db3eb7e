"""Every error status the service sends has one body, as ``application/json``:
``{"error": <code>, "detail": [{"reason": <str>, "field"?: <str>, "index"?: <int>}, ...]}``.

Each case provokes its status in-process. A status that only the HTTP server in front of
the app can send (408 request timeout, 431 headers too large) needs a case here as soon as
the service sends it; ``test_every_service_error_status_has_a_case`` fails until then for
statuses raised through ``ServiceError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from service.api import health
from service.app import create_app
from service.config import Settings
from service.errors import ServiceError
from tests.api.test_ingest import BATCH, GOOD, ONE

RANGE = {"user_id": "nobody", "start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}


def _fail(*_args: object) -> list[str]:
    raise RuntimeError("a bug in a route")


def _overload(c: TestClient) -> httpx.Response:
    assert c.post(BATCH, json={"readings": [GOOD, {**GOOD, "device_id": "b"}]}).status_code == 202
    return c.post(ONE, json={**GOOD, "device_id": "c"})  # the buffer holds 2 rows


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
    # 408 and 431: add a Case here once the service answers them
]


def assert_error_body(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"] == "application/json"
    body = r.json()
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

    assert {cls.status for cls in tree(ServiceError)} <= {c.status for c in CASES}
