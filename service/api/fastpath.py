"""A shortcut for the hottest route: a valid single reading skips FastAPI's routing.

It answers ``POST /metrics/<metric>`` itself when the body is a well-formed, valid
reading (the common case), doing exactly what the route does: validate, submit (202 only
once durable), count. Anything else (a bad or oversized body, a stopping worker) is
handed to the FastAPI app with the body replayed, so every error is reported by the one
route that owns it and the route stays documented in the OpenAPI schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.ingest import ACCEPTED_BODY
from service.api.runtime import Runtime
from service.catalog import METRICS
from service.errors import ServiceError, error_response
from service.validation import parse_one

_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ACCEPTED_BODY)).encode()),
]


@dataclass(frozen=True, slots=True)
class _Route:
    path: str  # what ``RequestObserver`` labels the request with


class SingleReadingShortcut:
    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self._state = state  # the app's: ``runtime`` once the lifespan has started
        self._routes = {spec.path: spec for spec in METRICS.values()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        rt = getattr(self._state, "runtime", None)
        if spec is None or scope["method"] != "POST" or not isinstance(rt, Runtime):
            await self.app(scope, receive, send)
            return
        body, more, whole = await _read(receive, rt.settings.max_body_bytes)
        rows = parse_one(body, spec) if whole else None
        if rows is None:
            await self.app(scope, _replay(body, more, receive), send)
            return
        scope["route"] = _Route(scope["path"])
        try:
            await rt.ingestor.submit(spec.name, rows)
        except ServiceError as exc:
            await error_response(exc)(scope, receive, send)
            return
        metrics.tally.inc(metrics.tally.child(metrics.READINGS_ACCEPTED, "single"))
        scope.setdefault("state", {})["accepted"] = 1
        await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": ACCEPTED_BODY})


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool, bool]:
    """(what was read, whether more body follows, whether it is whole and within limit)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False, False
        chunk = message.get("body", b"")
        more = bool(message.get("more_body", False))
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), more, False
        if not more:
            return b"".join(chunks), False, True


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` as if nothing had been read from it yet."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": more}

    return replay
