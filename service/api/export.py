"""The export route: ``GET /users/<user_id>/export``, a user's raw readings streamed.

Who may call it is decided by the access-control layer in front of the routes (SPEC: the
``read`` scope for that user); this route only answers. A user with no reading in the
asked range gets a ``404``, as every other read route answers (decided before the first
byte is sent: the first day with readings is read first, which the export needs anyway).
"""

from __future__ import annotations

import itertools
from typing import Annotated, get_args

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from service.api import params
from service.api.context import worker_context
from service.api.schemas import QUERY_ERRORS
from service.errors import NotFound, field_error
from service.export import Format
from service.query.export import MEDIA_TYPES, Export, encode, frames
from service.schema import METRICS
from service.timestamps import MAX_MS, MIN_MS, REASON, parse_timestamp_ms

PARAMETERS = ("format", "metric", "start", "end")

router = APIRouter(tags=["export"])
EXAMPLES = {
    "csv": "timestamp,device_id,metric,value\n2024-01-15T10:00:00.000Z,device_a,heart_rate,75.0\n",
    "ndjson": '{"timestamp":"2024-01-15T10:00:00.000Z","device_id":"device_a",'
    '"metric":"heart_rate","value":75.0}\n',
    "parquet": "(a Parquet file: columns timestamp, device_id, metric, value)",
}


@router.get(
    "/users/{user_id:path}/export",
    summary="Every de-duplicated raw reading of a user, streamed as CSV, NDJSON or Parquet",
    response_class=StreamingResponse,
    responses={
        **QUERY_ERRORS,
        200: {
            "description": "Rows timestamp, device_id, metric, value; by metric, then time.",
            "content": {
                media: {"schema": {"type": "string"}, "example": EXAMPLES[name]}
                for name, media in MEDIA_TYPES.items()
            },
        },
    },
)
async def export_user(
    request: Request,
    user_id: Annotated[str, Path(description="The user whose readings to export.")],
    format: Annotated[str, Query(description="csv, ndjson or parquet.")],
    metric: Annotated[str | None, Query(description="Only this metric.")] = None,
    start: Annotated[str | None, Query(description="Inclusive start, ISO 8601.")] = None,
    end: Annotated[str | None, Query(description="Exclusive end, ISO 8601.")] = None,
) -> StreamingResponse:
    params.only(request, PARAMETERS)
    params.user(user_id)
    fmt = _format(format)
    export = Export(user_id, _metrics(metric), *_range(start, end))
    ctx = worker_context(request.app.state)
    parts = frames(ctx.reader, export)
    first = await anyio.to_thread.run_sync(next, parts, None)
    if first is None:
        raise NotFound(
            "no readings", [{"field": "user_id", "reason": "no readings in the requested range"}]
        )
    body = encode(itertools.chain([first], parts), fmt)
    disposition = f'attachment; filename="export.{fmt}"'
    return StreamingResponse(
        body, media_type=MEDIA_TYPES[fmt], headers={"content-disposition": disposition}
    )


def _format(text: str) -> Format:
    for fmt in get_args(Format):
        if text == fmt:
            return fmt  # type: ignore[no-any-return]
    raise field_error("format", "must be one of " + ", ".join(get_args(Format)))


def _metrics(text: str | None) -> tuple[str, ...]:
    if text is None:
        return tuple(METRICS)
    name = text.replace("-", "_")
    if name not in METRICS:
        raise field_error("metric", "must be one of " + ", ".join(METRICS))
    return (name,)


def _range(start: str | None, end: str | None) -> tuple[int, int]:
    """(start_ms, end_ms): each bound given, else every timestamp ingestion accepts; the
    length is not limited (an export streams, whatever its range)."""
    bounds = [MIN_MS, MAX_MS]
    for i, (name, text) in enumerate((("start", start), ("end", end))):
        if text is not None:
            ms = parse_timestamp_ms(params.unplus(text))
            if ms is None:
                raise field_error(name, REASON)
            bounds[i] = ms
    if bounds[0] >= bounds[1]:
        raise field_error("end", "must be after start")
    return bounds[0], bounds[1]
