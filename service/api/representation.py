"""How an answer is sent: JSON or CSV as the client asks, gzip-compressed when large."""

from __future__ import annotations

import gzip

from fastapi import Response
from starlette.datastructures import Headers

GZIP_MIN_BYTES = 1024  # smaller answers gain less than the header and the CPU cost
GZIP_LEVEL = 5  # most of level 9's ratio on series text at a fraction of its time


def _weights(header: str) -> dict[str, float]:
    """``Accept``-style header -> {token: q}; a malformed q counts as 0."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        token, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if token:
            weights[token.strip().lower()] = q
    return weights


def wants_csv(headers: Headers) -> bool:
    """The client prefers ``text/csv`` over JSON."""
    accept = _weights(headers.get("accept", ""))
    csv = accept.get("text/csv", 0.0)
    return csv > 0 and csv >= max(accept.get("application/json", 0.0), accept.get("*/*", 0.0))


def accepts_gzip(headers: Headers) -> bool:
    encodings = _weights(headers.get("accept-encoding", ""))
    return encodings.get("gzip", encodings.get("*", 0.0)) > 0


def encode(body: bytes, gzip_ok: bool) -> tuple[bytes, bool]:
    """``body``, compressed when worth it and accepted; blocking (run it in a thread)."""
    if gzip_ok and len(body) > GZIP_MIN_BYTES:
        return gzip.compress(body, GZIP_LEVEL, mtime=0), True
    return body, False


def respond(body: bytes, compressed: bool, media_type: str) -> Response:
    headers = {"vary": "Accept, Accept-Encoding"}
    if compressed:
        headers["content-encoding"] = "gzip"
    return Response(body, media_type=media_type, headers=headers)
