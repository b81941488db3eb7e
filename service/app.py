"""create_app(settings) -> FastAPI; the lifespan wires the per-worker objects."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.api import health, ingest, query
from service.api import metrics as metrics_route
from service.api.runtime import Runtime
from service.catalog import METRICS
from service.config import Settings
from service.errors import install_handlers
from service.ingest.buffer import Buffer
from service.ingest.writer import Ingestor
from service.query.reader import Reader
from service.storage.store import Store


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(settings)
        worker = f"{os.getpid()}x{secrets.token_hex(4)}"
        store = Store(settings.data_dir, worker, settings.lock_timeout_s)
        buffer = Buffer()
        ingestor = Ingestor(settings, store, buffer)
        await ingestor.start()
        app.state.runtime = Runtime(settings, store, ingestor, Reader(settings, store, buffer))
        app.state.worker = worker
        try:
            yield
        finally:
            app.state.runtime = None
            await ingestor.stop()

    app = FastAPI(title="Heart-rate metrics", version="0.1.0", lifespan=lifespan)
    install_handlers(app)
    for spec in METRICS.values():
        app.include_router(ingest.ingest_router(spec))
        app.include_router(query.query_router(spec))
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.add_middleware(RequestMetrics)
    return app


class RequestMetrics:
    """Latency by route template and status, and the ``X-Served-By`` worker header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        worker = getattr(scope["app"].state, "worker", "") if "app" in scope else ""

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-served-by", str(worker).encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics.REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


app = create_app()
