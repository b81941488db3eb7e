"""create_app(settings) -> the ASGI app; the lifespan wires the per-worker objects.

Three thin ASGI middlewares run before FastAPI's routing: ``RequestObserver`` (latency,
access log, request ids) around ``BodyDeadline`` (a body must arrive in time) around
``ValidReadingsShortcut`` (valid readings answered without FastAPI's routing). All see
every request, so every route is observed and bounded the same way.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import logs, metrics
from service.api import health, ingest, query
from service.api import metrics as metrics_route
from service.api.context import WorkerContext
from service.api.fastpath import ValidReadingsShortcut
from service.api.limits import BodyDeadline
from service.api.observe import RequestObserver
from service.api.redirects import redirect_slashes_relatively
from service.config import Settings
from service.errors import install_handlers
from service.ingest.buffer import Buffer
from service.ingest.ingestor import Ingestor
from service.query.reader import Reader
from service.schema import METRICS
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
        app.state.context = WorkerContext(
            settings, store, ingestor, Reader(settings, store, buffer)
        )
        app.state.worker = worker
        try:
            yield
        finally:
            app.state.context = None
            await ingestor.stop()
            logs.access_log.flush()
            metrics.tally.flush()

    app = FastAPI(
        title="Heart-rate metrics",
        version="0.1.0",
        lifespan=lifespan,
        # metrics are Prometheus's; FastAPI's OpenTelemetry checks cost time per request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_handlers(app)
    redirect_slashes_relatively(app)
    for spec in METRICS.values():
        app.include_router(ingest.ingest_router(spec))
        app.include_router(query.query_router(spec))
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    # the last added runs first: observe, then bound the body, then the shortcut
    app.add_middleware(ValidReadingsShortcut)
    app.add_middleware(BodyDeadline, timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestObserver)
    return app


app = create_app()
