"""Error tree and the one JSON error shape; the only module that turns exceptions into HTTP.

    ServiceError (500 internal)
    ├── InvalidInput (400 invalid_input)      bad body, field or query parameter
    ├── Unauthorized (401 unauthorized)       no key, or an unknown one; WWW-Authenticate
    ├── Forbidden (403 forbidden)             a key without the scope the request needs
    ├── NotFound (404 not_found)              no readings in the requested range
    ├── RequestTimeout (408 request_timeout)  body or header block not received in time
    ├── PayloadTooLarge (413 payload_too_large)
    ├── HeadersTooLarge (431 headers_too_large)  header block over its limit
    └── Unavailable (503 unavailable)         carries Retry-After
        ├── Overloaded (503 overloaded)       buffers full
        ├── StorageFull (503 storage_full)    disk full or write failed
        └── ManifestBusy (503 manifest_busy)  manifest lock not acquired in time

Body: ``{"error": code, "detail": [{"field": ..., "reason": ...}, ...]}``; batch errors
add ``"index"`` to each detail item. A 408 or 431 also closes the connection: the rest of
the request may still be on its way, so the next bytes cannot be trusted as a new request.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # the web framework is imported where a response is made: the storage
    # layer and the maintenance process (a compaction start) load without it (~1 s of CPU)
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

Detail = dict[str, str | int]

log = logging.getLogger("service.errors")


class ServiceError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    closes_connection: ClassVar[bool] = False

    def __init__(self, message: str, detail: list[Detail] | None = None) -> None:
        super().__init__(message)
        self.detail: list[Detail] = detail if detail is not None else [{"reason": message}]


class InvalidInput(ServiceError):
    status = 400
    code = "invalid_input"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"
    challenge: ClassVar[str] = "Bearer"  # the WWW-Authenticate header (RFC 6750)


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class RequestTimeout(ServiceError):
    status = 408
    code = "request_timeout"
    closes_connection = True


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class HeadersTooLarge(ServiceError):
    status = 431
    code = "headers_too_large"
    closes_connection = True


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
    retry_after_s: ClassVar[int] = 1


class Overloaded(Unavailable):
    code = "overloaded"


class StorageFull(Unavailable):
    code = "storage_full"
    retry_after_s = 5


class ManifestBusy(Unavailable):
    code = "manifest_busy"


CLIENT_GONE = 499  # the client closed the connection before its request was whole


def field_error(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{field}: {reason}", [{"field": field, "reason": reason}])


def error_body(code: str, detail: list[Detail]) -> dict[str, object]:
    # FastAPI clients expect "detail"; "error" is a stable machine-readable code
    return {"error": code, "detail": detail}


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


def error_response(exc: ServiceError) -> JSONResponse:
    """The response for ``exc``: its status, code and detail, ``Retry-After`` on 503."""
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else {}
    if exc.closes_connection:
        headers["Connection"] = "close"
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = exc.challenge
    if exc.status >= 500:
        log.warning("request failed: %s (%s)", exc, exc.code)
    return JSONResponse(error_body(exc.code, exc.detail), status_code=exc.status, headers=headers)


def raw_response(exc: ServiceError) -> bytes:
    """``exc`` as a whole HTTP/1.1 response, for a connection refused before any app runs."""
    body = json.dumps(error_body(exc.code, exc.detail), separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {exc.status} {HTTPStatus(exc.status).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    assert isinstance(exc, RequestValidationError)
    detail: list[Detail] = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("query", "body")]
        detail.append({"field": ".".join(loc) or "body", "reason": str(err.get("msg", "invalid"))})
    return JSONResponse(error_body(InvalidInput.code, detail), status_code=400)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    assert isinstance(exc, StarletteHTTPException)
    status = 400 if exc.status_code == 422 else exc.status_code
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    body = error_body(code, [{"reason": str(exc.detail)}])
    return JSONResponse(body, status_code=status, headers=exc.headers)


INTERNAL_BODY = error_body(
    ServiceError.code, [{"reason": "internal error; the log names it by this request's id"}]
)


async def _client_gone(_request: Request, _exc: Exception) -> Response:
    # nobody reads the answer; 499 (nginx's "client closed request") marks it in the
    # access log and the metrics, apart from the service's own errors
    from fastapi.responses import Response

    return Response(status_code=CLIENT_GONE)


async def _internal_error(_request: Request, _exc: Exception) -> JSONResponse:
    # the one error shape even for a bug; the exception is logged by the server
    from fastapi.responses import JSONResponse

    return JSONResponse(INTERNAL_BODY, status_code=500)


def install_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
