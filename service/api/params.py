"""Query-string parameters shared by the read routes, each checked with a 400 naming it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import Query
from starlette.requests import Request

from service.errors import field_error
from service.query.buckets import INTERVALS, STATS, Shape, known_zone
from service.text import TEXT_REASON, printable
from service.timestamps import parse_timestamp_ms
from service.validation import DEVICE_ID_MAX, USER_ID_MAX

# documented as date-times; a route parses them itself (``time_range``), naming a bad one
Start = Annotated[
    str,
    Query(
        description="Inclusive start, ISO 8601; no offset means UTC.",
        json_schema_extra={"format": "date-time"},
        examples=["2024-01-15T10:00:00Z"],
    ),
]
End = Annotated[
    str,
    Query(
        description="Exclusive end, ISO 8601; after `start`, and the range is bounded.",
        json_schema_extra={"format": "date-time"},
        examples=["2024-01-15T11:00:00Z"],
    ),
]


def only(request: Request, allowed: Iterable[str]) -> None:
    """A parameter the route does not know is a mistake worth naming, not ignoring."""
    known = set(allowed)
    for name in request.query_params:
        if name not in known:
            raise field_error(name, "unknown parameter")


def user(user_id: str, device_id: str | None = None) -> None:
    if not 1 <= len(user_id) <= USER_ID_MAX:
        raise field_error("user_id", f"must be 1 to {USER_ID_MAX} characters long")
    if device_id is not None and not 1 <= len(device_id) <= DEVICE_ID_MAX:
        raise field_error("device_id", f"must be 1 to {DEVICE_ID_MAX} characters long")
    for name, text in (("user_id", user_id), ("device_id", device_id or "")):
        if not printable(text):
            raise field_error(name, TEXT_REASON)


def time_range(start: str, end: str, width_ms: int, max_buckets: int, unit: str) -> tuple[int, int]:
    """``(start_ms, end_ms)``; the range may hold at most ``max_buckets`` of ``width_ms``."""
    start_ms, end_ms = parse_timestamp_ms(unplus(start)), parse_timestamp_ms(unplus(end))
    if start_ms is None:
        raise field_error("start", "must be an ISO 8601 date-time")
    if end_ms is None:
        raise field_error("end", "must be an ISO 8601 date-time")
    if start_ms >= end_ms:
        raise field_error("end", "must be after start")
    if -(-(end_ms - start_ms) // width_ms) > max_buckets:
        raise field_error("end", f"the range may hold at most {max_buckets} {unit}")
    return start_ms, end_ms


def zone(tz: str) -> str:
    if not (printable(tz) and known_zone(tz)):
        raise field_error("tz", "must be an IANA time zone name such as Europe/Berlin")
    return tz


def shape(interval: str, tz: str, stats: str | None) -> Shape:
    if interval not in INTERVALS:
        raise field_error("interval", "must be one of " + ", ".join(INTERVALS))
    chosen: list[str] = []
    for name in [] if stats is None else stats.split(","):
        if name not in STATS:
            raise field_error("stats", "must be a comma list of " + ", ".join(STATS))
        if name in chosen:
            raise field_error("stats", f"lists {name} twice")
        chosen.append(name)
    return Shape(interval, zone(tz), tuple(chosen))


def unplus(text: str) -> str:
    # an unencoded "+02:00" in a query string arrives as " 02:00"
    return text[:11] + text[11:].replace(" ", "+")
