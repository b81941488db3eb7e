"""The per-minute series route."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response

from service.api.context import worker_context
from service.api.schemas import ERROR_RESPONSES, Series
from service.errors import NotFound, field_error
from service.query.reader import Query as SeriesQuery
from service.schema import DAY_MS, MetricSpec
from service.timestamps import parse_timestamp_ms
from service.validation import DEVICE_ID_MAX, TEXT_REASON, USER_ID_MAX, printable


def query_router(spec: MetricSpec) -> APIRouter:
    path = spec.path
    router = APIRouter(tags=["query"])

    @router.get(
        path,
        response_model=Series,
        summary=f"Per-minute {spec.name} series",
        responses={
            **ERROR_RESPONSES,
            404: ERROR_RESPONSES[400] | {"description": "No readings in the range."},
        },
    )
    async def get_series(
        request: Request,
        user_id: Annotated[str, Query(description="The user whose readings to return.")],
        start: Annotated[str, Query(description="Inclusive start, ISO 8601.")],
        end: Annotated[str, Query(description="Exclusive end, ISO 8601.")],
        device_id: Annotated[str | None, Query(description="Only this device.")] = None,
    ) -> Response:
        ctx = worker_context(request.app.state)
        q = _parse(spec, user_id, start, end, device_id, ctx.settings.max_query_days)
        body = await anyio.to_thread.run_sync(ctx.reader.run, q)
        if body is None:
            raise NotFound(
                "no readings",
                [{"field": "user_id", "reason": "no readings in the requested range"}],
            )
        return Response(body, media_type="application/json")

    return router


def _parse(
    spec: MetricSpec, user_id: str, start: str, end: str, device_id: str | None, max_days: float
) -> SeriesQuery:
    if not 1 <= len(user_id) <= USER_ID_MAX:
        raise field_error("user_id", f"must be 1 to {USER_ID_MAX} characters long")
    if device_id is not None and not 1 <= len(device_id) <= DEVICE_ID_MAX:
        raise field_error("device_id", f"must be 1 to {DEVICE_ID_MAX} characters long")
    for name, text in (("user_id", user_id), ("device_id", device_id or "")):
        if not printable(text):
            raise field_error(name, TEXT_REASON)
    start_ms, end_ms = parse_timestamp_ms(_unplus(start)), parse_timestamp_ms(_unplus(end))
    if start_ms is None:
        raise field_error("start", "must be an ISO 8601 date-time")
    if end_ms is None:
        raise field_error("end", "must be an ISO 8601 date-time")
    if start_ms >= end_ms:
        raise field_error("end", "must be after start")
    if end_ms - start_ms > max_days * DAY_MS:
        raise field_error("end", f"the range may span at most {max_days:g} days")
    return SeriesQuery(spec.name, user_id, start_ms, end_ms, device_id)


def _unplus(text: str) -> str:
    # an unencoded "+02:00" in a query string arrives as " 02:00"
    return text[:11] + text[11:].replace(" ", "+")
