"""The erase route: ``DELETE /users/<user_id>``.

Who may call it is decided by the access-control layer in front of the routes (SPEC: the
``admin`` scope); this route only erases (see ``service.eraser``) and answers the receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from fastapi import APIRouter, Request, Response

from service import eraser
from service.api import params
from service.api.context import worker_context
from service.api.schemas import ErasureReceipt, documented, error_response

router = APIRouter(tags=["users"])


@router.delete(
    "/users/{user_id:path}",
    response_model=ErasureReceipt,
    summary="Erase every reading of a user, in every metric, everywhere",
    responses={
        200: documented(
            {
                "user_id": "user_123",
                "erased_at": "2024-01-16T09:00:00.000Z",
                "readings_erased": 1234,
                "files_rewritten": 3,
                "files_clean_by": "2024-01-16T09:00:00.350Z",
            }
        ),
        400: error_response(
            "A bad user id; it is named.", "user_id", "must be 1 to 128 characters long"
        ),
    },
)
async def erase_user(request: Request, user_id: str) -> Response:
    ctx = worker_context(request.app.state)
    params.user(user_id)
    receipt = await eraser.erase(
        ctx.settings, ctx.store, ctx.ingestor.flusher, ctx.reader.unflushed, user_id
    )
    body = {
        "user_id": receipt.user_id,
        "erased_at": _iso(receipt.erased_at),
        "readings_erased": receipt.readings_erased,
        "files_rewritten": receipt.files_rewritten,
        "files_clean_by": _iso(receipt.files_clean_by),
    }
    return Response(msgspec.json.encode(body), media_type="application/json")


def _iso(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
