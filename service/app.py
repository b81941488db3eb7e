"""create_app(settings) -> FastAPI; the lifespan wires the per-worker objects."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import logs
from service.api import health, ingest, query
from service.api import metrics as metrics_route
from service.api.fastpath import SingleReadingShortcut
from service.api.observe import RequestObserver
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
    app.add_middleware(SingleReadingShortcut)  # inside the observer: observed like any route
    app.add_middleware(RequestObserver)
    return app


app = create_app()
