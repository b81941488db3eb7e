"""The ceilings for ./ops/bench: apps that read each POST body and answer 202.

``app`` is a FastAPI route, ``raw`` a bare ASGI callable (no framework at all: the most
the HTTP server and gunicorn config carry). Both run under the service's own gunicorn
config, so the difference to the real routes is the service's work (validation, WAL,
fsync, buffer, metrics) and, beside ``raw``, the framework's. ``durable`` is the floor
of that work (the floor phase): a bare ASGI app doing only what no design of this write
path can skip, parsing and checking each reading and making it durable before the 202.
Each runs as ``.venv/bin/gunicorn -c gunicorn.conf.py --bind 127.0.0.1:PORT ops.bench_noop:app``
(the positional app overrides the config's ``wsgi_app``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

from service.api.accept import batch_accepted_body
from service.schema import HEART_RATE, Rows
from service.storage.wal import OwnedLog, encode_frame
from service.validation import parse_batch, parse_one

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


class _Log:
    """The service's own WAL segment writer (``OwnedLog``) behind a group commit: one
    append and fsync for every request that queued while the previous one ran, in
    one thread, as the service's ``GroupCommitter`` does (without its buffer)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._owned = OwnedLog(directory, f"floor{os.getpid()}")
        self._pending: list[tuple[str, Rows, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="floor-log")

    async def append(self, metric: str, rows: Rows) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((metric, rows, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            group, self._pending = self._pending, []
            data = b"".join(encode_frame(metric, 0, rows) for metric, rows, _ in group)
            await loop.run_in_executor(self._thread, self._write, data)
            for _, _, future in group:
                if not future.done():
                    future.set_result(None)

    def _write(self, data: bytes) -> None:
        self._owned.current.append(data)
        self._owned.current.sync()


_LOG: list[_Log] = []  # made by the first request, in the worker (after the fork)


async def durable(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """The write path's own work and nothing else: the service's parser and checks
    (``parse_one``, ``parse_batch``), its WAL frame, and a group commit (write and
    fsync) before the 202; no buffer, flush, compaction, counters, logs or layers.
    Files go to ``HR_DATA_DIR``. What the service adds to it is the rest of its work."""
    if scope["type"] != "http":
        await raw(scope, receive, send)
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, batch = b"".join(chunks), scope["path"].endswith("/batch")
    spec = HEART_RATE
    rows = parse_batch(body, spec, 10_000, 31) if batch else parse_one(body, spec)
    if scope["method"] != "POST" or rows is None:
        status = 200 if scope["method"] == "GET" else 400
        await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    if not _LOG:
        _LOG.append(_Log(Path(os.environ.get("HR_DATA_DIR", "data")) / "floor"))
    await _LOG[0].append(spec.name, rows)
    answer = batch_accepted_body(len(rows), 0, len(rows), []) if batch else _ACCEPTED
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": answer})
