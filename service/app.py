"""create_app(settings) -> the ASGI app; the lifespan wires the per-worker objects.

Thin ASGI layers run in front of the FastAPI app: ``RequestObserver`` (latency,
access log, request ids) around access control and CORS (``auth.layer.guard``; each
absent when off) around ``BodyDeadline`` (a body must arrive in time) around
``ValidReadingsShortcut`` (valid readings answered without FastAPI's routing). All see
every request, so every route is observed and bounded the same way.

They wrap the FastAPI app rather than being registered with ``add_middleware``: there
they would run inside FastAPI's own layers (error, telemetry and body-limit middleware),
which cost a single-reading request ~10 us more in-process (~38 against ~29 us for the
whole app), about a quarter of the app's part of the request.
"""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service import logs, metrics
from service.api import erase, export, health, ingest, openapi, query, readings, stream, users
from service.api import metrics as metrics_route
from service.api import summary as summary_route
from service.api.context import WorkerContext
from service.api.fastpath import ValidReadingsShortcut
from service.api.limits import BodyDeadline
from service.api.observe import RequestObserver
from service.api.pages import install_pages
from service.api.redirects import redirect_slashes_relatively
from service.auth.layer import guard
from service.config import Settings
from service.errors import install_handlers
from service.ingest.buffer import Buffer
from service.ingest.ingestor import Ingestor
from service.live.feed import ChangeFeed
from service.live.hub import Hub
from service.query.reader import Reader
from service.query.users import UserIndex
from service.schema import METRICS
from service.storage.store import open_store

# the youngest generation is collected after this many new container objects, not 700: each
# request allocates dozens (coroutines, closures, dicts), and the collections that followed,
# the older ones over every object the worker holds, were the single POST's slowest requests
GC_YOUNG_THRESHOLD = 50_000


def _collect_less() -> None:
    """Fewer, cheaper garbage collections in a started worker: what exists now (modules,
    the app) is moved out of the collector's sight, and young collections run less often.
    Single POSTs with 64 connections: p99 38-40 ms -> 15-26 ms in alternating runs."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class ServiceApp:
    """The served ASGI app: the service's layers in front of the FastAPI app ``api``."""

    def __init__(self, api: FastAPI, settings: Settings) -> None:
        self.api = api
        bounded = BodyDeadline(ValidReadingsShortcut(api), settings.body_timeout_s)
        guarded = guard(bounded, settings, [spec.path for spec in METRICS.values()])
        self._asgi = RequestObserver(guarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.api  # as Starlette does: the layers find the app's state there
        await self._asgi(scope, receive, send)


# longer than 40 lines: a worker's life in one place (the lifespan stops what it started,
# in reverse), then the routes in the order they are installed
def create_app(settings: Settings | None = None) -> ServiceApp:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(settings)
        worker = f"{os.getpid()}x{secrets.token_hex(4)}"
        store = open_store(settings, worker)
        buffer = Buffer()
        ingestor = Ingestor(settings, store, buffer)
        await ingestor.start()
        reader = Reader(settings, store, buffer)
        # the user list reads the unflushed rows through the Reader's own sources (one WAL
        # tail cache per worker, not two)
        index = UserIndex(store, reader.unflushed)
        app.state.context = WorkerContext(settings, store, ingestor, reader, index)
        app.state.worker = worker
        feed = ChangeFeed(store.wal_dir, worker)
        buffer.on_add = feed.record
        streams = Hub(reader, store, feed, ingestor.health, settings.stream_tick_s)
        streams.start()
        app.state.streams = streams
        if settings.master_pid:  # a gunicorn worker (tests keep their process's defaults)
            _collect_less()
        try:
            yield
        finally:
            app.state.context = app.state.streams = None
            await streams.stop()
            await ingestor.stop()
            logs.access_log.flush()
            metrics.tally.flush()

    app = FastAPI(
        title="Heart-rate metrics",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_pages, not from a CDN
        redoc_url=None,
        # metrics are Prometheus's; FastAPI's OpenTelemetry checks cost time per request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_handlers(app)
    openapi.install(app)
    redirect_slashes_relatively(app)
    for spec in METRICS.values():
        app.include_router(ingest.ingest_router(spec))
        app.include_router(query.query_router(spec))
        app.include_router(stream.stream_router(spec))
    app.include_router(readings.router)
    app.include_router(summary_route.router)
    app.include_router(users.router)
    app.include_router(export.router)
    app.include_router(erase.router)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    install_pages(app)
    return ServiceApp(app, settings)


app = create_app()
