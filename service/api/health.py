"""Liveness and readiness."""

from __future__ import annotations

import os
import shutil

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.context import WorkerContext, worker_context
from service.api.schemas import Health, Readiness, documented
from service.storage.files import write_private
from service.storage.quarantine import quarantined

router = APIRouter(tags=["operations"])


HEALTHY = {"status": "healthy", "service": "heart-rate-metrics"}
NOT_READY = {"status": "not ready", "reasons": ["only 1048576 bytes free, below 67108864"]}


@router.get(
    "/health",
    response_model=Health,
    operation_id="get_health",
    summary="Liveness: the worker answers",
    responses={200: documented(HEALTHY)},
)
async def health() -> dict[str, str]:
    return HEALTHY


@router.get(
    "/ready",
    response_model=Readiness,
    operation_id="get_ready",
    summary="Readiness: storage is writable, readable and has room",
    responses={
        200: documented({"status": "ready"}, description="Ready, or degraded (see `quarantined`)."),
        503: documented(NOT_READY, model=Readiness, description="Not ready; `reasons` say why."),
    },
)
async def ready(request: Request) -> JSONResponse:
    """503 when this worker cannot serve; 200 ``degraded`` when it serves without some
    quarantined files (an operator's job, which taking traffic away would not do)."""
    ctx = worker_context(request.app.state)
    problems = await anyio.to_thread.run_sync(_check, ctx)
    problems += ctx.ingestor.problems()
    lost = sorted(await anyio.to_thread.run_sync(quarantined, ctx.store.root))
    extra = {"quarantined": lost} if lost else {}
    if problems:
        body = {"status": "not ready", "reasons": problems, **extra}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "degraded", **extra} if lost else {"status": "ready"})


def _check(ctx: WorkerContext) -> list[str]:
    problems: list[str] = []
    root = ctx.store.root
    probe = root / f".ready-{os.getpid()}"
    try:
        write_private(probe, b"ok")
        probe.unlink()
    except OSError as exc:
        problems.append(f"data directory {root} is not writable: {exc.strerror}")
    try:
        ctx.store.manifest.read()
    except (OSError, ValueError) as exc:
        problems.append(f"manifest is not readable: {exc}")
    try:
        free = shutil.disk_usage(root).free
        if free < ctx.settings.min_free_bytes:
            problems.append(f"only {free} bytes free, below {ctx.settings.min_free_bytes}")
    except OSError as exc:
        problems.append(f"free space unknown: {exc.strerror}")
    return problems
