"""A shortcut for the hottest routes: valid readings skip FastAPI's routing.

It answers ``POST /metrics/<metric>`` itself when the body is a well-formed, valid
reading, and ``POST /metrics/<metric>/batch`` when every reading of a batch up to
``OFFLOAD_BYTES`` is valid (the common cases), doing exactly what the route does:
validate, submit (202 only once durable), count, answer the same body. Anything else (a
bad reading, a bad, oversized or late body, a stopping worker) is handed to the FastAPI
app with the body replayed, so every error is reported by the one route that owns it, and
the routes stay documented in the OpenAPI schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.ingest import ACCEPTED_BODY, OFFLOAD_BYTES, batch_accepted_body
from service.api.runtime import Runtime
from service.errors import RequestTimeout, ServiceError, error_response
from service.schema import METRICS, MetricSpec, Rows
from service.validation import parse_batch, parse_one


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]


_SINGLE_HEADERS = _headers(ACCEPTED_BODY)


@dataclass(frozen=True, slots=True)
class _Route:
    path: str  # what ``RequestObserver`` labels the request with


class ValidReadingsShortcut:
    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self._state = state  # the app's: ``runtime`` once the lifespan has started
        self._routes: dict[str, tuple[MetricSpec, bool]] = {}
        for spec in METRICS.values():
            self._routes[spec.path] = (spec, False)
            self._routes[spec.path + "/batch"] = (spec, True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        rt = getattr(self._state, "runtime", None)
        if route is None or scope["method"] != "POST" or not isinstance(rt, Runtime):
            await self.app(scope, receive, send)
            return
        spec, batch = route
        limit = (
            min(rt.settings.max_body_bytes, OFFLOAD_BYTES) if batch else rt.settings.max_body_bytes
        )
        body, more, whole = await _read(receive, limit)
        rows: Rows | None = None
        if whole:
            rows = (
                parse_batch(body, spec, rt.settings.max_batch, rt.settings.max_batch_days)
                if batch
                else parse_one(body, spec)
            )
        if rows is None:
            await self.app(scope, _replay(body, more, receive), send)
            return
        scope["route"] = _Route(scope["path"])
        try:
            await rt.ingestor.submit(spec.name, rows)
        except ServiceError as exc:
            await error_response(exc)(scope, receive, send)
            return
        count = len(rows)
        endpoint = "batch" if batch else "single"
        metrics.tally.inc(metrics.tally.child(metrics.READINGS_ACCEPTED, endpoint), count)
        state = scope.setdefault("state", {})
        state["accepted"] = count
        if batch:
            state["rejected"] = 0
            answer = batch_accepted_body(count, 0, count, [])
            headers = _headers(answer)
        else:
            answer, headers = ACCEPTED_BODY, _SINGLE_HEADERS
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool, bool]:
    """(what was read, whether more body follows, whether it is whole and within limit)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            message = await receive()
        except RequestTimeout:
            # past the body deadline: the route's own next read raises it again and reports it
            return b"".join(chunks), True, False
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
