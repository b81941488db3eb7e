"""The user-list route: ``GET /users``.

Who may call it is decided by the access-control layer in front of the routes (SPEC: the
``admin`` scope, or ``read`` for all users); this route only answers.

Parameters are read from the query string here rather than declared to FastAPI: an
unknown or repeated parameter is a 400 naming it, and the OpenAPI document lists the
statuses the route really answers (no 422).
"""

from __future__ import annotations

import anyio
import msgspec
from fastapi import APIRouter, Request, Response
from starlette.datastructures import QueryParams

from service.api.context import worker_context
from service.api.schemas import UserList, documented, error_response
from service.errors import field_error
from service.query.users import Page
from service.text import TEXT_REASON, printable
from service.validation import USER_ID_MAX

LIMIT_MAX = 1000
LIMIT_DEFAULT = 100
PARAMETERS = ("limit", "after", "prefix")

_DOCUMENTED = [
    {
        "name": "limit",
        "in": "query",
        "description": f"Users per page, 1 to {LIMIT_MAX}.",
        "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX},
        "example": LIMIT_DEFAULT,
    },
    {
        "name": "after",
        "in": "query",
        "description": "Only users whose id sorts strictly after this one (the last `next`).",
        "schema": {"type": "string", "minLength": 1, "maxLength": USER_ID_MAX},
    },
    {
        "name": "prefix",
        "in": "query",
        "description": "Only users whose id starts with this text.",
        "schema": {"type": "string", "minLength": 1, "maxLength": USER_ID_MAX},
    },
]

router = APIRouter(tags=["users"])


@router.get(
    "/users",
    response_model=UserList,
    operation_id="list_users",
    summary="Users with stored readings, sorted by id, a page at a time",
    responses={
        200: documented({"users": ["u1", "u2"], "next": "u2"}),
        400: error_response(
            "A bad, repeated or unknown parameter; it is named.",
            "limit",
            f"must be an integer from 1 to {LIMIT_MAX}",
        ),
    },
    openapi_extra={"parameters": _DOCUMENTED},
)
async def list_users(request: Request) -> Response:
    ctx = worker_context(request.app.state)
    page = parse_page(request.query_params)
    found = await anyio.to_thread.run_sync(ctx.users.page, page)
    body = msgspec.json.encode({"users": found.users, "next": found.next})
    return Response(body, media_type="application/json")


def parse_page(params: QueryParams) -> Page:
    """The page a query string asks for; raises ``InvalidInput`` naming a bad parameter."""
    for name in params:
        if name not in PARAMETERS:
            raise field_error(name, f"unknown query parameter; expected {', '.join(PARAMETERS)}")
        if len(params.getlist(name)) > 1:
            raise field_error(name, "given more than once")
    text = params.get("limit")
    limit = LIMIT_DEFAULT
    if text is not None:
        if not (text.isascii() and text.isdigit() and len(text) <= 6):
            raise field_error("limit", f"must be an integer from 1 to {LIMIT_MAX}")
        limit = int(text)
        if not 1 <= limit <= LIMIT_MAX:
            raise field_error("limit", f"must be an integer from 1 to {LIMIT_MAX}")
    return Page(limit, _user_text(params, "after"), _user_text(params, "prefix"))


def _user_text(params: QueryParams, name: str) -> str | None:
    """A user id (or the start of one) checked like the series route's ``user_id``."""
    text = params.get(name)
    if text is None:
        return None
    if not 1 <= len(text) <= USER_ID_MAX:
        raise field_error(name, f"must be 1 to {USER_ID_MAX} characters long")
    if not printable(text):
        raise field_error(name, TEXT_REASON)
    return text
