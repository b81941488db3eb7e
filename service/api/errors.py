"""The one JSON error shape, and the only place that turns exceptions into HTTP.

Body: ``{"error": code, "detail": [{"field": ..., "reason": ...}, ...]}``; batch errors
add ``"index"`` to each detail item.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import Detail, InvalidInput, ServiceError, Unavailable

log = logging.getLogger("service.errors")


def error_body(code: str, detail: list[Detail]) -> dict[str, object]:
    # FastAPI clients expect "detail"; "error" is a stable machine-readable code
    return {"error": code, "detail": detail}


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


def error_response(exc: ServiceError) -> JSONResponse:
    """The response for ``exc``: its status, code and detail, ``Retry-After`` on 503."""
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
    if exc.status >= 500:
        log.warning("request failed: %s (%s)", exc, exc.code)
    return JSONResponse(error_body(exc.code, exc.detail), status_code=exc.status, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail: list[Detail] = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("query", "body")]
        detail.append({"field": ".".join(loc) or "body", "reason": str(err.get("msg", "invalid"))})
    return JSONResponse(error_body(InvalidInput.code, detail), status_code=400)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = 400 if exc.status_code == 422 else exc.status_code
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    body = error_body(code, [{"reason": str(exc.detail)}])
    return JSONResponse(body, status_code=status, headers=exc.headers)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
