"""Per-request observation: latency metrics, one access-log line, request and worker ids."""

from __future__ import annotations

import os
import time

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.logs import access_log

_MAX_REQUEST_ID = 128


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= _MAX_REQUEST_ID and text.isprintable():
                return text
    return os.urandom(8).hex()


class RequestObserver:
    """Latency by route template and status, an access-log line, and the
    ``X-Request-ID`` (accepted or generated) and ``X-Served-By`` response headers."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self._state = state  # the app's: ``worker`` once the lifespan has started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        worker = str(getattr(self._state, "worker", ""))
        state = scope.setdefault("state", {})
        extra = [(b"x-request-id", request_id.encode("latin-1")), (b"x-served-by", worker.encode())]

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            template = getattr(scope.get("route"), "path", "unmatched")
            tally = metrics.tally
            tally.observe(
                tally.child(metrics.REQUEST_SECONDS, scope["method"], template, str(status)),
                elapsed,
            )
            if access_log.enabled:
                access_log.request(
                    scope["method"],
                    scope["path"],
                    template,
                    status,
                    elapsed,
                    request_id,
                    worker,
                    state.get("accepted"),
                    state.get("rejected"),
                )
