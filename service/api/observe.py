"""Per-request observation: latency metrics, one access-log line, request and worker ids."""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import INTERNAL_BODY
from service.logs import access_log

_MAX_REQUEST_ID = 128
_INTERNAL = json.dumps(INTERNAL_BODY).encode()
log = logging.getLogger("service.http")


def _given_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= _MAX_REQUEST_ID and text.isprintable():
                return text
    return None


class RequestObserver:
    """Latency by route template and status, an access-log line, and the
    ``X-Request-ID`` (accepted or generated) and ``X-Served-By`` response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._worker: str | None = None  # set by the first request
        self._served_by = (b"x-served-by", b"")
        self._ids = itertools.count()
        self._id_prefix = ""

    def _identify(self, scope: Scope) -> str:
        """The worker id, and a new request-id series whenever it changes (a new worker)."""
        # the app's state names the worker once the lifespan has started
        worker = str(getattr(scope["app"].state, "worker", ""))
        if worker != self._worker:
            self._worker, self._served_by = worker, (b"x-served-by", worker.encode())
            self._id_prefix, self._ids = secrets.token_hex(4), itertools.count()
        return worker

    # longer than 40 lines: every request runs it; a helper call per step costs each request
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        worker = self._identify(scope)
        # generated ids: a random prefix per worker and a counter (16 hex digits), unique
        # without a getrandom call per request
        request_id = _given_request_id(scope) or (
            f"{self._id_prefix}{next(self._ids) & 0xFFFFFFFF:08x}"
        )
        state = scope.setdefault("state", {})
        extra = [(b"x-request-id", request_id.encode("latin-1")), self._served_by]

        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # a bug below: logged with the request id, answered in the one error shape
            log.exception("request %s failed", request_id)
            if not started_response:
                await _send_internal_error(send_wrapper)
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
                    state.get("key"),
                )


async def _send_internal_error(send: Send) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_INTERNAL))]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": _INTERNAL})
