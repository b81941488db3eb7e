"""``POST /readings``: records holding several metrics at once; 202 once all are durable."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.accept import accept_records
from service.api.bodies import records_body
from service.api.context import worker_context
from service.api.ingest import count_rejected, nothing_valid, validated_body
from service.api.schemas import INGEST_RESPONSES, RECORDS_ACCEPTED, RecordsAccepted, documented
from service.records import RecordsResult, validate_records

PATH = "/readings"

router = APIRouter(tags=["ingest"])


@router.post(
    PATH,
    status_code=202,
    response_model=RecordsAccepted,
    responses={**INGEST_RESPONSES, 202: documented(RECORDS_ACCEPTED)},
    operation_id="post_readings",
    summary="Store records of several metrics (heart rate, steps, calories)",
    description=(
        '`{"readings": [...]}` or a bare array of records. Each metric field of a record '
        "becomes one reading of that metric; a record with no metric field, or with any "
        "bad field, is rejected whole and reported by index. `accepted`, `rejected` and "
        "`total` count records; `by_metric` counts the readings stored per metric."
    ),
    openapi_extra=records_body(),
)
async def post_records(request: Request) -> Response:
    ctx = worker_context(request.app.state)
    st = ctx.settings

    def validate(body: bytes) -> RecordsResult:
        return validate_records(body, st.max_batch, st.max_batch_days)

    result = await validated_body(request, st.max_body_bytes, "records", validate)
    count_rejected("records", result.errors)
    if not result.accepted:
        raise nothing_valid(result.errors, "record")
    answer = await accept_records(ctx, request.scope, result)
    return Response(answer, status_code=202, media_type="application/json")
