"""The series route of each metric: any interval, local days, statistics, JSON or CSV."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response

from service.api import params
from service.api.context import worker_context
from service.api.representation import accepts_gzip, encode, respond, wants_csv
from service.api.schemas import QUERY_ERRORS, Series
from service.errors import NotFound
from service.query.buckets import INTERVALS
from service.query.reader import Query as SeriesQuery
from service.query.series import series, to_csv, to_json
from service.schema import MetricSpec

SERIES_PARAMS = ("user_id", "start", "end", "device_id", "interval", "tz", "stats")


def query_router(spec: MetricSpec) -> APIRouter:
    router = APIRouter(tags=["query"])

    @router.get(
        spec.path,
        response_model=Series,
        summary=f"{spec.name} series at any interval",
        responses={
            **QUERY_ERRORS,
            200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        },
    )
    async def get_series(
        request: Request,
        user_id: Annotated[str, Query(description="The user whose readings to return.")],
        start: Annotated[str, Query(description="Inclusive start, ISO 8601.")],
        end: Annotated[str, Query(description="Exclusive end, ISO 8601.")],
        device_id: Annotated[str | None, Query(description="Only this device.")] = None,
        interval: Annotated[str, Query(description="Bucket width: " + ", ".join(INTERVALS))] = "1m",
        tz: Annotated[
            str, Query(description="IANA zone: 1h and 1d buckets follow its clock.")
        ] = "UTC",
        stats: Annotated[str | None, Query(description="Comma list of min, max, count.")] = None,
    ) -> Response:
        params.only(request, SERIES_PARAMS)
        params.user(user_id, device_id)
        shape = params.shape(interval, tz, stats)
        ctx = worker_context(request.app.state)
        width = INTERVALS[shape.interval]
        start_ms, end_ms = params.time_range(
            start, end, width, ctx.settings.max_buckets, f"buckets of {shape.interval}"
        )
        q = SeriesQuery(spec.name, user_id, start_ms, end_ms, device_id, shape.slot, shape.extremes)
        csv = wants_csv(request.headers)
        gzip_ok = accepts_gzip(request.headers)

        def answer() -> tuple[bytes, bool] | None:
            frame = series(ctx.reader, q, shape)
            if frame is None:
                return None
            return encode(to_csv(frame) if csv else to_json(user_id, frame), gzip_ok)

        body = await anyio.to_thread.run_sync(answer)
        if body is None:
            raise NotFound(
                "no readings",
                [{"field": "user_id", "reason": "no readings in the requested range"}],
            )
        return respond(*body, "text/csv" if csv else "application/json")

    return router
