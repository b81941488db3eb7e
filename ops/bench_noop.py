"""The ceilings for ./ops/bench: apps that read each POST body and answer 202.

``app`` is a FastAPI route, ``raw`` a bare ASGI callable (no framework at all: the most
the HTTP server and gunicorn config carry). Both run under the service's own gunicorn
config, so the difference to the real routes is the service's work (validation, WAL,
fsync, buffer, metrics) and, beside ``raw``, the framework's:
``.venv/bin/gunicorn -c gunicorn.conf.py --bind 127.0.0.1:PORT ops.bench_noop:app``
(the positional app overrides the config's ``wsgi_app``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request, Response

_ACCEPTED = b'{"status":"accepted"}'

app = FastAPI(title="bench no-op")


@app.post("/metrics/{rest:path}", status_code=202)
async def accept(request: Request, rest: str) -> Response:
    await request.body()
    return Response(_ACCEPTED, status_code=202, media_type="application/json")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "healthy", "service": "bench-noop"}


Message = MutableMapping[str, Any]
_HEADERS = [(b"content-type", b"application/json")]


async def raw(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Read the whole body, answer 202 with the same bytes as ``app``; lifespan: nothing."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = scope["type"] == "http"
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ACCEPTED})
