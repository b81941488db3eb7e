"""The series route of each metric: any interval, local days, statistics, JSON or CSV."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response

from service.api import params
from service.api.context import worker_context
from service.api.representation import accepts_gzip, encode, respond, wants_csv
from service.api.schemas import QUERY_ERRORS, series_example, series_model
from service.config import Settings
from service.errors import NotFound
from service.query.buckets import INTERVALS
from service.query.series import series, to_csv, to_json
from service.query.sources import Query as SeriesQuery
from service.schema import DAY_MS, MetricSpec

SERIES_PARAMS = ("user_id", "start", "end", "device_id", "interval", "tz", "stats")

DESCRIPTION = (
    "Readings with `start <= timestamp < end`, de-duplicated, one device per priority bucket "
    "(the minute, or the second at `1s`), aggregated per `interval` bucket."
)
# documented as an enum and a pattern; the route checks them itself, naming the parameter
Interval = Annotated[
    str,
    Query(
        description="Bucket width; `1h` and `1d` buckets follow the clock of `tz`.",
        json_schema_extra={
            "enum": list(INTERVALS),
            # names for the enum's members in generated clients (EVERY_5M, not VALUE_2)
            "x-enum-varnames": [f"EVERY_{name.upper()}" for name in INTERVALS],
        },
    ),
]
Zone = Annotated[str, Query(description="IANA time zone name.", examples=["Europe/Berlin"])]
Stats = Annotated[
    str | None,
    Query(
        description="Comma list of `min`, `max`, `count`, each at most once: each bucket "
        "then carries those fields, over the same readings as its value.",
        json_schema_extra={"pattern": "^(min|max|count)(,(min|max|count))*$"},
        examples=["min,max,count"],
    ),
]

# at most a day of minutes read from this machine's files is answered on the event loop:
# ~9 ms of CPU, where handing it to a thread cost 50-70 ms under a steady POST load (each
# return from Polars waits for the interpreter lock the loop holds); longer series, and
# the Delta store's (its reads may wait on the network), run in a thread
INLINE_MAX_BUCKETS = DAY_MS // INTERVALS["1m"]


def runs_inline(settings: Settings, start_ms: int, end_ms: int, width: int) -> bool:
    """Whether a series of ``width``-ms buckets over ``[start_ms, end_ms)`` is answered on
    the event loop rather than in a thread."""
    span = end_ms - start_ms
    return settings.store == "local" and span <= DAY_MS and span <= width * INLINE_MAX_BUCKETS


# longer than 40 lines: one route function closed over its metric, and its documentation
def query_router(spec: MetricSpec) -> APIRouter:
    router = APIRouter(tags=["query"])
    example, csv_example = series_example(spec)

    @router.get(
        spec.path,
        response_model=series_model(spec),
        operation_id=f"get_{spec.name}_series",
        summary=f"{spec.name} series at any interval",
        description=DESCRIPTION,
        responses={
            **QUERY_ERRORS,
            200: {
                "description": "The buckets, as JSON or (with `Accept: text/csv`) as CSV.",
                "content": {
                    "application/json": {"example": example},
                    "text/csv": {"schema": {"type": "string"}, "example": csv_example},
                },
            },
        },
    )
    async def get_series(
        request: Request,
        user_id: Annotated[str, Query(description="The user whose readings to return.")],
        start: params.Start,
        end: params.End,
        device_id: Annotated[str | None, Query(description="Only this device.")] = None,
        interval: Interval = "1m",
        tz: Zone = "UTC",
        stats: Stats = None,
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

        if runs_inline(ctx.settings, start_ms, end_ms, width):
            body = answer()
        else:
            body = await anyio.to_thread.run_sync(answer)
        if body is None:
            raise NotFound(
                "no readings",
                [{"field": "user_id", "reason": "no readings in the requested range"}],
            )
        return respond(*body, "text/csv" if csv else "application/json")

    return router
