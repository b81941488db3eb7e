"""Response models and the statuses each route documents, each with an example of its body.

They describe the API in the OpenAPI document; the bodies themselves are written without
them (by Polars, msgspec or json), so the examples below are copies of real answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from service.errors import error_body
from service.schema import MetricSpec

Responses = dict[int | str, dict[str, Any]]


def documented(
    example: object, media_type: str = "application/json", **extra: object
) -> dict[str, Any]:
    """One documented response: ``extra`` (``model``, ``description``) and an example body."""
    return {**extra, "content": {media_type: {"example": example}}}


class ErrorDetail(BaseModel):
    field: str | None = None
    reason: str
    index: int | None = None


class ErrorBody(BaseModel):
    error: str
    detail: list[ErrorDetail]


def error_response(
    description: str, field: str | None, reason: str, code: str = "invalid_input"
) -> dict[str, Any]:
    """A documented error response, its example naming ``field`` and ``reason``."""
    detail: dict[str, str | int] = (
        {"reason": reason} if field is None else {"field": field, "reason": reason}
    )
    return documented(error_body(code, [detail]), model=ErrorBody, description=description)


INGEST_RESPONSES: Responses = {
    400: error_response(
        "Invalid input; each bad field is named.",
        "timestamp",
        "must be an ISO 8601 date-time in the years 1970 to 2100, such as 2024-01-15T10:00:00Z",
    ),
    408: error_response(
        "The body did not arrive in time.",
        "body",
        "not received within 10s",
        "request_timeout",
    ),
    413: error_response(
        "Body or batch over its limit.",
        "readings",
        "at most 10000 readings per batch",
        "payload_too_large",
    ),
    503: error_response(
        "Overloaded or disk full; retry after Retry-After.",
        None,
        "100000 rows wait for a flush; try again shortly",
        "overloaded",
    ),
}
QUERY_ERRORS: Responses = {
    400: error_response(
        "A bad or unknown parameter; it is named.",
        "interval",
        "must be one of 1s, 1m, 5m, 15m, 30m, 1h, 1d",
    ),
    404: error_response(
        "No readings in the range.", "user_id", "no readings in the requested range", "not_found"
    ),
}


class Accepted(BaseModel):
    status: str = "accepted"


class BatchError(BaseModel):
    index: int
    field: str
    reason: str


class BatchAccepted(BaseModel):
    status: str = "accepted"
    accepted: int
    rejected: int
    total: int
    errors: list[BatchError]


class RecordsAccepted(BatchAccepted):
    by_metric: dict[str, int] = Field(description="Readings stored per metric.")


ACCEPTED = documented({"status": "accepted"})
BATCH_ACCEPTED = {
    "status": "accepted",
    "accepted": 1,
    "rejected": 1,
    "total": 2,
    "errors": [{"index": 1, "field": "heart_rate", "reason": "must be between 30 and 220"}],
}
RECORDS_ACCEPTED = {
    **BATCH_ACCEPTED,
    "errors": [{"index": 1, "field": "steps", "reason": "must be between 0 and 100000"}],
    "by_metric": {"heart_rate": 1, "steps": 1, "calories": 0},
}


def series_model(spec: MetricSpec) -> type[BaseModel]:
    """``<Metric>Series``: its buckets carry the metric's own field and type."""
    kind = int if spec.integer else float
    name = spec.name.title().replace("_", "")
    bucket = create_model(  # type: ignore[call-overload]
        f"{name}Bucket",
        timestamp=(datetime, Field(description="The bucket's start, in the offset of `tz`.")),
        **{spec.field: (kind, Field(description=f"The bucket's {spec.aggregation}."))},
        device_id=(str, Field(description="The device that supplied the bucket.")),
        min=_stat(kind, "Lowest reading; with `stats=min`."),
        max=_stat(kind, "Highest reading; with `stats=max`."),
        count=_stat(int, "Readings in the bucket; with `stats=count`."),
    )
    model: type[BaseModel] = create_model(
        f"{name}Series",
        user_id=(str, ...),
        data=(list[bucket], Field(description="Buckets by `timestamp`, ascending.")),  # type: ignore[valid-type]
        count=(int, Field(description="The number of buckets in `data`.")),
    )
    return model


def _stat(kind: type, description: str) -> tuple[object, object]:
    # absent unless asked for, never null: no "null" type and no default in the schema
    return kind, Field(None, description=description, json_schema_extra=_no_default)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def series_example(spec: MetricSpec) -> tuple[dict[str, object], str]:
    """A JSON and a CSV example of the metric's series with ``stats=min,max,count``."""
    value = {"heart_rate": 75.5, "steps": 120, "calories": 4.5}.get(spec.field, spec.minimum)
    low, high = (72.0, 79.0) if spec.field == "heart_rate" else (value, value)
    bucket = {
        "timestamp": "2024-01-15T10:00:00Z",
        spec.field: value,
        "device_id": "device_a",
        "min": low,
        "max": high,
        "count": 2 if spec.field == "heart_rate" else 1,
    }
    csv = f"timestamp,{spec.field},device_id,min,max,count\n" + ",".join(map(str, bucket.values()))
    return {"user_id": "user_123", "data": [bucket], "count": 1}, csv + "\n"


class HeartRateSummary(BaseModel):
    mean: float
    min: float
    max: float
    count: int
    minutes: int
    resting: float | None = Field(
        description="Lowest mean of 5 consecutive minutes with readings; null without them."
    )


class StepsSummary(BaseModel):
    total: int
    minutes: int


class CaloriesSummary(BaseModel):
    total: float
    minutes: int


class DeviceSummary(BaseModel):
    device_id: str
    readings: int
    minutes: int


class Summary(BaseModel):
    user_id: str
    start: datetime = Field(description="The range's start, in the offset of `tz`.")
    end: datetime = Field(description="The range's end, in the offset of `tz`.")
    heart_rate: HeartRateSummary | None
    steps: StepsSummary | None
    calories: CaloriesSummary | None
    devices: list[DeviceSummary]


SUMMARY = {
    "user_id": "user_123",
    "start": "2024-01-15T00:00:00Z",
    "end": "2024-01-16T00:00:00Z",
    "heart_rate": {
        "mean": 71.8,
        "min": 48.0,
        "max": 164.0,
        "count": 51234,
        "minutes": 1402,
        "resting": 52.5,
    },
    "steps": {"total": 10412, "minutes": 431},
    "calories": {"total": 2210.5, "minutes": 1440},
    "devices": [{"device_id": "device_a", "readings": 50012, "minutes": 1390}],
}


class UserList(BaseModel):
    users: list[str]
    next: str | None = Field(
        description="The last user of this page when more users follow (pass it as `after`)."
    )


class Health(BaseModel):
    status: Literal["healthy"]
    service: str


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "not ready"]
    reasons: list[str] = Field(
        default_factory=list, description="Why the worker cannot serve (503 only)."
    )
    quarantined: list[str] = Field(
        default_factory=list, description="Unreadable data files moved aside, if any."
    )


class ErasureReceipt(BaseModel):
    """What ``DELETE /users/<user_id>`` erased. ``files_clean_by``: when no file held an
    erased row any more (at most the answer's time), or the latest time it will be so."""

    user_id: str
    erased_at: str
    readings_erased: int
    files_rewritten: int
    files_clean_by: str
