"""A shortcut for the hottest routes: valid readings skip FastAPI's routing.

It answers ``POST /metrics/<metric>`` itself when the body is a well-formed, valid
reading, and ``POST /metrics/<metric>/batch`` when every reading of a batch up to
``OFFLOAD_BYTES`` is valid (the common cases): read, parse, accept (the routes' own
``accept``), send. Anything else (a bad reading, a bad, oversized or late body, a
stopping worker) is handed to the FastAPI app with the body replayed, so every error is
reported by the one route that owns it, and the routes stay documented in the OpenAPI
schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.accept import ACCEPTED_BODY, accept, read_body
from service.api.context import WorkerContext
from service.api.ingest import OFFLOAD_BYTES
from service.errors import ServiceError, error_response
from service.schema import METRICS, MetricSpec, Rows
from service.validation import parse_batch, parse_one


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]


_SINGLE_HEADERS = _headers(ACCEPTED_BODY)


@dataclass(frozen=True, slots=True)
class _Route:
    path: str  # what ``RequestObserver`` labels the request with


class ValidReadingsShortcut:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[str, tuple[MetricSpec, bool]] = {}
        for spec in METRICS.values():
            self._routes[spec.path] = (spec, False)
            self._routes[spec.path + "/batch"] = (spec, True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        ctx = getattr(scope["app"].state, "context", None) if route is not None else None
        if route is None or scope["method"] != "POST" or not isinstance(ctx, WorkerContext):
            await self.app(scope, receive, send)
            return
        spec, batch = route
        st = ctx.settings
        body = await read_body(
            receive, min(st.max_body_bytes, OFFLOAD_BYTES) if batch else st.max_body_bytes
        )
        rows: Rows | None = None
        if body.whole:
            rows = (
                parse_batch(body.data, spec, st.max_batch, st.max_batch_days)
                if batch
                else parse_one(body.data, spec)
            )
        if rows is None:
            # the route reads on: a late body's next read fails again, and a client that
            # went away is seen gone (not as a whole body, cut short)
            more = body.more or body.gone
            await self.app(scope, _replay(body.data, more, receive), send)
            return
        scope["route"] = _Route(scope["path"])
        try:
            answer = await accept(ctx, scope, spec, rows, batch)
        except ServiceError as exc:
            await error_response(exc)(scope, receive, send)
            return
        headers = _headers(answer) if batch else _SINGLE_HEADERS
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


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
