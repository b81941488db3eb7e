"""The OpenAPI document: FastAPI's, less the ``422`` it assumes, plus what every route shares.

FastAPI adds a ``422`` (and its ``HTTPValidationError`` schema) to every route that declares
a parameter or a body, because that is its default validation status. Here the one handler
in ``service.errors`` answers validation errors with ``400`` in the error shape, so the
document says so: the ``422`` is dropped, and every route that takes input declares its
``400`` with an example (``tests/api/test_openapi.py`` holds each route to that).

Request bodies come inlined (``service.api.bodies``); each model in them (an object schema
with a title) is moved into ``components`` under its title, so that a generated client
names its classes ``HeartRateReading`` rather than after the route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

DESCRIPTION = """\
Stores heart-rate, steps and calories readings durably and answers series at any interval.

Every error, whatever its status, has one shape: `{"error": code, "detail": [{"field",
"reason"}]}`. Besides the statuses listed per route, any request may be answered `405`
(wrong method), `431` (header block over 16 KB, and the connection closes), `500` (a bug;
the log names it by the request's `x-request-id`) or `503` with `Retry-After` (the worker
is starting or stopping). Answers over 1 KB are gzip-compressed when the request's
`Accept-Encoding` allows it (`Content-Encoding: gzip`; HTTP clients undo it themselves).
"""

_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


def install(app: FastAPI) -> None:
    """Serve the amended document at ``/openapi.json`` (and to ``/docs`` and ``/redoc``)."""
    build = app.openapi  # FastAPI's: builds the document once and keeps it in openapi_schema

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            amend(build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.description = DESCRIPTION
    app.openapi = document  # type: ignore[method-assign]


def amend(doc: dict[str, Any]) -> None:
    """Drop each ``422`` and the schemas only it used; name the request bodies' models."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ONLY:
        schemas.pop(name, None)
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            for media in operation.get("requestBody", {}).get("content", {}).values():
                media["schema"] = _named(media["schema"], schemas)


def _named(node: object, schemas: dict[str, Any]) -> object:
    """``node`` with each titled object schema in it replaced by a reference to ``schemas``."""
    if isinstance(node, list):
        return [_named(item, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _named(value, schemas) for key, value in node.items()}
    title = node.get("title")
    if node.get("type") != "object" or not isinstance(title, str) or "properties" not in node:
        return node
    if schemas.setdefault(title, node) != node:
        raise ValueError(f"two different schemas are named {title}")
    return {"$ref": f"#/components/schemas/{title}"}
