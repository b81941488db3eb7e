"""The trailing-slash redirect, with a relative ``Location``.

Starlette's own (``redirect_slashes``) builds an absolute URL from the request's
``Host`` header, so whatever Host a client sends is echoed into the redirect (a cache
in front can then serve a poisoned redirect to others). A path alone redirects the same
for every client and needs no trust in Host or proxy headers.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import Receive, Scope, Send


class SlashRedirect:
    """The router's fallback: a path that names a route once its trailing slash is added
    or removed is redirected there (307, as Starlette does); anything else is a 404."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope) if scope["type"] == "http" else None
        if target is None:
            await self._router.not_found(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        # RedirectResponse percent-encodes the URL: no request byte reaches the header raw
        await RedirectResponse(target + ("?" + query if query else ""))(scope, receive, send)

    def _target(self, scope: Scope) -> str | None:
        path: str = scope["path"]
        if path.startswith("//"):
            return None  # "//host/..." in a Location is another site (protocol-relative)
        other = path.rstrip("/") if path.endswith("/") else path + "/"
        if other in ("", "/"):
            return None
        probe = {**scope, "path": other}
        if any(route.matches(probe)[0] is not Match.NONE for route in self._router.routes):
            return other
        return None


def redirect_slashes_relatively(app: FastAPI) -> None:
    """Replace Starlette's slash redirect (absolute, from Host) with ``SlashRedirect``."""
    app.router.redirect_slashes = False
    app.router.default = SlashRedirect(app.router)
