"""The access-control ASGI layer: every request but the open pages shows a key with the
scope its route needs (``rules``), before any route or shortcut runs.

It sits inside ``RequestObserver`` (refusals are logged and counted like any answer) and
outside everything that answers requests. On the way in it puts the key's name in
``scope["state"]["key"]`` (the access log names it; the secret is never kept) and the
``Principal`` in ``scope["state"]["principal"]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth.keys import keys_path
from service.auth.principal import Principal
from service.auth.ring import KeyRing
from service.auth.rules import NOTHING, Rules, refusal
from service.config import Settings
from service.errors import ServiceError, Unauthorized, error_response

_BEARER = b"bearer "


def _no_key(reason: str) -> Unauthorized:
    return Unauthorized(reason, [{"field": "authorization", "reason": reason}])


_MISSING = _no_key("send an API key: 'Authorization: Bearer <key>'")
_UNKNOWN = _no_key("unknown or revoked API key")


class AccessControl:
    """``required``: refuse requests without a key even while no key exists (``HR_AUTH=on``,
    or ``auto`` beyond loopback); otherwise (``auto`` on loopback) keys are needed only once
    one has been created."""

    def __init__(self, app: ASGIApp, ring: KeyRing, rules: Rules, *, required: bool) -> None:
        self.app = app
        self.ring = ring
        self.rules = rules
        self.required = required

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # not a coroutine: it returns the next layer's (or the refusal's) awaitable, so
        # the layer adds no frame that every suspension of the request passes through
        # (callgrind, in-process single POST with a key: 21.4k -> 16.9k instructions added)
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        need = self.rules.need(scope["method"], scope["path"])
        if need is NOTHING or (not self.required and not self.ring.current()):
            return self.app(scope, receive, send)
        principal = self._principal(scope)
        problem = _UNKNOWN if principal is None else refusal(need, principal, scope)
        if problem is not None:
            return _refuse(problem, scope, receive, send)
        assert principal is not None
        state = scope.setdefault("state", {})
        state["key"], state["principal"] = principal.name, principal
        return self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> Principal | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() != _BEARER:
                    return None
                return self.ring.find(value[7:].strip())
        return None


async def _refuse(problem: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
    if problem is _UNKNOWN and not any(n == b"authorization" for n, _ in scope["headers"]):
        problem = _MISSING
    await error_response(problem)(scope, receive, send)


def guard(app: ASGIApp, settings: Settings, metric_paths: Iterable[str]) -> ASGIApp:
    """``app`` behind access control and CORS as configured; each layer is left out when
    off, so it then costs nothing."""
    if settings.auth != "off":
        ring = KeyRing(keys_path(settings.data_dir))
        app = AccessControl(app, ring, Rules(metric_paths), required=settings.auth_required)
    if settings.cors_origins:
        # outside access control: a browser's preflight carries no key, and a refusal
        # needs the CORS headers for the page to read it
        app = CORSMiddleware(
            app,
            allow_origins=settings.cors_origins,
            allow_methods=("GET", "POST", "DELETE"),
            allow_headers=("Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"),
            expose_headers=("Retry-After", "WWW-Authenticate", "X-Request-ID", "X-Served-By"),
        )
    return app
