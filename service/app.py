"""create_app(settings) -> the ASGI app; the lifespan wires the per-worker objects.

The FastAPI app sits inside three thin ASGI layers: ``RequestObserver`` (latency, access
log, request ids) around ``BodyDeadline`` (a body must arrive in time) around
``ValidReadingsShortcut`` (valid readings answered without FastAPI's middleware and
routing). All see every request, so every route is observed and bounded the same way.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service import logs, metrics
from service.api import health, ingest, query
from service.api import metrics as metrics_route
from service.api.fastpath import ValidReadingsShortcut
from service.api.limits import BodyDeadline
from service.api.observe import RequestObserver
from service.api.redirects import redirect_slashes_relatively
from service.api.runtime import Runtime
from service.config import Settings
from service.errors import install_handlers
from service.ingest.buffer import Buffer
from service.ingest.ingestor import Ingestor
from service.query.reader import Reader
from service.schema import METRICS
from service.storage.store import Store


class ServiceApp:
    """The served ASGI app; attributes (``state``, ``openapi``...) are the FastAPI app's."""

    def __init__(self, api: FastAPI, settings: Settings) -> None:
        self.api = api
        bounded = BodyDeadline(ValidReadingsShortcut(api, api.state), settings.body_timeout_s)
        self._asgi = RequestObserver(bounded, api.state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


def create_app(settings: Settings | None = None) -> ServiceApp:
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
    return ServiceApp(app, settings)


app = create_app()
