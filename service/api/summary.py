"""The summary route: one call for a dashboard tile or a clinician's overview."""

from __future__ import annotations

import json
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response

from service.api import params
from service.api.context import worker_context
from service.api.representation import accepts_gzip, encode, respond
from service.api.schemas import QUERY_ERRORS, SUMMARY, Summary, documented
from service.errors import NotFound
from service.query.summary import summary
from service.schema import DAY_MS

router = APIRouter(tags=["query"])


@router.get(
    "/summary",
    response_model=Summary,
    operation_id="get_summary",
    summary="A user's totals, resting heart rate and devices over a range",
    description="Counted as the series count them: after duplicates, last write wins and "
    "device priority. A metric without readings in the range is `null`.",
    responses={**QUERY_ERRORS, 200: documented(SUMMARY)},
)
async def get_summary(
    request: Request,
    user_id: Annotated[str, Query(description="The user to summarise.")],
    start: params.Start,
    end: params.End,
    tz: Annotated[str, Query(description="IANA zone the range is echoed in.")] = "UTC",
) -> Response:
    params.only(request, ("user_id", "start", "end", "tz"))
    params.user(user_id)
    zone = params.zone(tz)
    ctx = worker_context(request.app.state)
    start_ms, end_ms = params.time_range(start, end, DAY_MS, ctx.settings.max_buckets, "days")
    gzip_ok = accepts_gzip(request.headers)

    def answer() -> tuple[bytes, bool] | None:
        body = summary(ctx.reader, user_id, start_ms, end_ms, zone)
        return None if body is None else encode(json.dumps(body).encode(), gzip_ok)

    found = await anyio.to_thread.run_sync(answer)
    if found is None:
        raise NotFound(
            "no readings", [{"field": "user_id", "reason": "no readings in the requested range"}]
        )
    return respond(*found, "application/json")
