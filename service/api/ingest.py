"""Ingestion routes: one reading, or a batch; 202 once durable."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from service import metrics
from service.api.accept import accept, read_body, too_large
from service.api.bodies import reading_bodies
from service.api.context import worker_context
from service.api.schemas import (
    ACCEPTED,
    BATCH_ACCEPTED,
    INGEST_RESPONSES,
    Accepted,
    BatchAccepted,
    documented,
)
from service.errors import Detail, InvalidInput
from service.schema import MetricSpec
from service.validation import BatchResult, validate_batch, validate_one

# larger bodies are validated in a thread; smaller ones on the event loop, where a batch of
# 1,000 readings (~100 KB) takes ~1 ms: cheaper than the two thread hand-offs it would cost
OFFLOAD_BYTES = 256 * 1024

_Result = TypeVar("_Result")


async def request_body(request: Request, limit: int) -> bytes:
    """The raw body, refused early when over ``limit``; any content type is read as JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = await read_body(request.receive, limit)
    if body.late is not None:
        raise body.late
    if body.gone:
        raise ClientDisconnect()
    if not body.whole:
        raise too_large(limit)
    return body.data


async def validated_body(
    request: Request, limit: int, endpoint: str, validate: Callable[[bytes], _Result]
) -> _Result:
    """The body read within ``limit`` and validated (in a thread when large); a body
    refused as a whole is counted once, against ``endpoint``."""
    body = await request_body(request, limit)
    try:
        if len(body) > OFFLOAD_BYTES:
            return await anyio.to_thread.run_sync(validate, body)
        return validate(body)
    except InvalidInput as exc:
        count_rejected(endpoint, exc.detail)
        raise


def nothing_valid(errors: list[Detail], noun: str) -> InvalidInput:
    """The 400 for a batch that holds no valid item: its errors, else that it is empty."""
    return InvalidInput(
        f"no valid {noun} in the batch",
        errors or [{"field": "readings", "reason": f"must hold at least one {noun}"}],
    )


def count_rejected(endpoint: str, errors: list[Detail]) -> None:
    """One count per rejected reading, labelled with its first bad field."""
    first: dict[object, Detail] = {}
    for item in errors:
        first.setdefault(item.get("index"), item)
    for item in first.values():
        # drop parser detail such as "(line 1 column 5)" to keep the label set small
        reason = str(item.get("reason", "")).split(" (", 1)[0]
        metrics.READINGS_REJECTED.labels(endpoint, str(item.get("field")), reason).inc()


# longer than 40 lines: two short route functions, closed over their metric
def ingest_router(spec: MetricSpec) -> APIRouter:
    path = spec.path
    router = APIRouter(tags=["ingest"])
    one_body, batch_body = reading_bodies(spec)

    @router.post(
        path,
        status_code=202,
        response_model=Accepted,
        responses={**INGEST_RESPONSES, 202: ACCEPTED},
        operation_id=f"post_{spec.name}_reading",
        summary=f"Store one {spec.name} reading",
        openapi_extra=one_body,
    )
    async def post_one(request: Request) -> Response:
        ctx = worker_context(request.app.state)
        body = await request_body(request, ctx.settings.max_body_bytes)
        try:
            rows = validate_one(body, spec)
        except InvalidInput as exc:
            count_rejected("single", exc.detail)
            raise
        answer = await accept(ctx, request.scope, spec, rows, batch=False)
        return Response(answer, status_code=202, media_type="application/json")

    @router.post(
        path + "/batch",
        status_code=202,
        response_model=BatchAccepted,
        responses={**INGEST_RESPONSES, 202: documented(BATCH_ACCEPTED)},
        operation_id=f"post_{spec.name}_batch",
        summary=f"Store a batch of {spec.name} readings",
        openapi_extra=batch_body,
    )
    async def post_batch(request: Request) -> Response:
        ctx = worker_context(request.app.state)
        st = ctx.settings

        def validate(body: bytes) -> BatchResult:
            return validate_batch(body, spec, st.max_batch, st.max_batch_days)

        result = await validated_body(request, st.max_body_bytes, "batch", validate)
        count_rejected("batch", result.errors)
        if not result.rows:
            raise nothing_valid(result.errors, "reading")
        rejected = len({item["index"] for item in result.errors})
        answer = await accept(
            ctx, request.scope, spec, result.rows, True, rejected, result.total, result.errors
        )
        return Response(answer, status_code=202, media_type="application/json")

    return router
