"""Ingestion routes: one reading, or a batch; 202 once durable."""

from __future__ import annotations

import json

import anyio
from fastapi import APIRouter, Request, Response

from service import metrics
from service.api.runtime import runtime
from service.api.schemas import ERROR_RESPONSES, Accepted, BatchAccepted
from service.errors import Detail, InvalidInput, PayloadTooLarge
from service.schema import MetricSpec
from service.validation import validate_batch, validate_one

ACCEPTED_BODY = b'{"status":"accepted"}'
# larger bodies are validated in a thread; smaller ones on the event loop, where a batch of
# 1,000 readings (~100 KB) takes ~1 ms: cheaper than the two thread hand-offs it would cost
OFFLOAD_BYTES = 256 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused early when over ``limit``; any content type is read as JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def count_rejected(endpoint: str, errors: list[Detail]) -> None:
    """One count per rejected reading, labelled with its first bad field."""
    first: dict[object, Detail] = {}
    for item in errors:
        first.setdefault(item.get("index"), item)
    for item in first.values():
        # drop parser detail such as "(line 1 column 5)" to keep the label set small
        reason = str(item.get("reason", "")).split(" (", 1)[0]
        metrics.READINGS_REJECTED.labels(endpoint, str(item.get("field")), reason).inc()


def batch_accepted_body(accepted: int, rejected: int, total: int, errors: list[Detail]) -> bytes:
    """The ``202`` body of a batch."""
    fields = {
        "status": "accepted",
        "accepted": accepted,
        "rejected": rejected,
        "total": total,
        "errors": errors,
    }
    return json.dumps(fields).encode()


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"body over {limit} bytes", [{"field": "body", "reason": f"at most {limit} bytes"}]
    )


def ingest_router(spec: MetricSpec) -> APIRouter:
    path = spec.path
    router = APIRouter(tags=["ingest"])

    @router.post(
        path,
        status_code=202,
        response_model=Accepted,
        responses=ERROR_RESPONSES,
        summary=f"Store one {spec.name} reading",
    )
    async def post_one(request: Request) -> Response:
        rt = runtime(request)
        body = await read_body(request, rt.settings.max_body_bytes)
        try:
            rows = validate_one(body, spec)
        except InvalidInput as exc:
            count_rejected("single", exc.detail)
            raise
        await rt.ingestor.submit(spec.name, rows)
        metrics.tally.inc(metrics.tally.child(metrics.READINGS_ACCEPTED, "single"))
        request.state.accepted = 1
        return Response(ACCEPTED_BODY, status_code=202, media_type="application/json")

    @router.post(
        path + "/batch",
        status_code=202,
        response_model=BatchAccepted,
        responses=ERROR_RESPONSES,
        summary=f"Store a batch of {spec.name} readings",
    )
    async def post_batch(request: Request) -> Response:
        rt = runtime(request)
        body = await read_body(request, rt.settings.max_body_bytes)
        limits = rt.settings.max_batch, rt.settings.max_batch_days
        try:
            if len(body) > OFFLOAD_BYTES:
                result = await anyio.to_thread.run_sync(validate_batch, body, spec, *limits)
            else:
                result = validate_batch(body, spec, *limits)
        except InvalidInput as exc:  # the body as a whole: counted once
            count_rejected("batch", exc.detail)
            raise
        count_rejected("batch", result.errors)
        if not result.rows:
            raise InvalidInput(
                "no valid reading in the batch",
                result.errors
                or [{"field": "readings", "reason": "must hold at least one reading"}],
            )
        await rt.ingestor.submit(spec.name, result.rows)
        metrics.READINGS_ACCEPTED.labels("batch").inc(len(result.rows))
        rejected = len({item["index"] for item in result.errors})
        request.state.accepted, request.state.rejected = len(result.rows), rejected
        body_out = batch_accepted_body(len(result.rows), rejected, result.total, result.errors)
        return Response(body_out, status_code=202, media_type="application/json")

    return router
