"""Response models: they document the API in OpenAPI; bodies are built without them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from service.schema import METRICS, MetricSpec
from service.validation import DEVICE_ID_MAX, USER_ID_MAX


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


class Bucket(BaseModel):
    timestamp: str
    heart_rate: float
    device_id: str


class Series(BaseModel):
    user_id: str
    data: list[Bucket]
    count: int


class UserList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"users": ["u1", "u2"], "next": "u2"}]}
    )

    users: list[str]
    next: str | None = Field(
        description="The last user of this page when more users follow (pass it as `after`)."
    )


class ErasureReceipt(BaseModel):
    """What ``DELETE /users/<user_id>`` erased. ``files_clean_by``: when no file held an
    erased row any more (at most the answer's time), or the latest time it will be so."""

    user_id: str
    erased_at: str
    readings_erased: int
    files_rewritten: int
    files_clean_by: str


class ErrorDetail(BaseModel):
    field: str | None = None
    reason: str
    index: int | None = None


class ErrorBody(BaseModel):
    error: str
    detail: list[ErrorDetail]


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "Invalid input; each bad field is named."},
    413: {"model": ErrorBody, "description": "Body or batch over its limit."},
    503: {"model": ErrorBody, "description": "Overloaded or disk full; retry after Retry-After."},
}

QUERY_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "A bad or unknown parameter; it is named."},
    404: {"model": ErrorBody, "description": "No readings in the range."},
}


class HeartRateSummary(BaseModel):
    mean: float
    min: float
    max: float
    count: int
    minutes: int
    resting: float | None


class TotalSummary(BaseModel):
    total: float
    minutes: int


class DeviceSummary(BaseModel):
    device_id: str
    readings: int
    minutes: int


class Summary(BaseModel):
    user_id: str
    start: str
    end: str
    heart_rate: HeartRateSummary | None
    steps: TotalSummary | None
    calories: TotalSummary | None
    devices: list[DeviceSummary]


class RecordsAccepted(BatchAccepted):
    by_metric: dict[str, int]  # readings stored per metric


INGEST_RESPONSES: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    408: {"model": ErrorBody, "description": "The body did not arrive in time."},
}


# Request bodies. The routes read the raw body (msgspec is several times faster than
# pydantic there); these models only describe it in the OpenAPI document.


class ReadingBase(BaseModel):
    user_id: Annotated[str, Field(min_length=1, max_length=USER_ID_MAX)] | int = Field(
        description="A JSON integer is stored as its decimal string."
    )
    device_id: Annotated[str, Field(min_length=1, max_length=DEVICE_ID_MAX)]
    timestamp: datetime = Field(
        description="ISO 8601 date-time, years 1970 to 2100; no offset means UTC."
    )


def _one_metric_or_more(schema: dict[str, Any]) -> None:
    schema["anyOf"] = [{"required": [spec.field]} for spec in METRICS.values()]


class RecordBase(ReadingBase):
    model_config = ConfigDict(json_schema_extra=_one_metric_or_more)


def _value(spec: MetricSpec, *, optional: bool) -> tuple[object, object]:
    """A metric field for ``create_model``: its type, bounds and rule, and whether it is
    required (absent, never null, when optional: no "default" in the schema)."""
    kind = int if spec.integer else float
    rule = f"{spec.minimum:g} to {spec.maximum:g}" + (", whole" if spec.integer else "")
    value = Annotated[kind, Field(ge=spec.minimum, le=spec.maximum, description=rule)]  # type: ignore[valid-type]
    return value, Field(None, json_schema_extra=_no_default) if optional else ...


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def request_body(schema: dict[str, Any], example: object) -> dict[str, object]:
    """``openapi_extra`` declaring a JSON request body: ``schema`` inlined (its ``$defs``
    would not resolve inside the OpenAPI document), and an example."""
    content = {"schema": _inline(schema), "example": example}
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


def _inline(schema: dict[str, Any]) -> object:
    defs = schema.pop("$defs", {})
    assert isinstance(defs, dict)

    def resolve(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


_EXAMPLE = {"user_id": "user_123", "device_id": "device_a", "timestamp": "2024-01-15T10:00:00Z"}
_EXAMPLE_VALUES: dict[str, float] = {"heart_rate": 75, "steps": 120, "calories": 4.5}


def _example(spec: MetricSpec, **changes: object) -> dict[str, object]:
    return {**_EXAMPLE, spec.field: _EXAMPLE_VALUES.get(spec.field, spec.minimum), **changes}


def reading_bodies(spec: MetricSpec) -> tuple[dict[str, object], dict[str, object]]:
    """``openapi_extra`` of the metric's single and batch routes."""
    name = spec.name.title().replace("_", "")
    value = {spec.field: _value(spec, optional=False)}
    reading = create_model(f"{name}Reading", __base__=ReadingBase, **value)  # type: ignore[call-overload]
    batch = create_model(f"{name}Batch", readings=(list[reading], Field(min_length=1)))  # type: ignore[valid-type]
    one = _example(spec)
    two = [one, _example(spec, timestamp="2024-01-15T10:00:05Z")]
    return (
        request_body(reading.model_json_schema(), one),
        request_body(batch.model_json_schema(), {"readings": two}),
    )


def records_body() -> dict[str, object]:
    """``openapi_extra`` of ``POST /readings``: records of several metrics."""
    values = {spec.field: _value(spec, optional=True) for spec in METRICS.values()}
    record = create_model("Record", __base__=RecordBase, **values)  # type: ignore[call-overload]
    wrapped = create_model("Records", readings=(list[record], Field(min_length=1)))  # type: ignore[valid-type]
    shape = TypeAdapter[Any](wrapped | list[record])  # type: ignore[valid-type,arg-type]
    heart_rate, steps, calories = (METRICS[name] for name in ("heart_rate", "steps", "calories"))
    example = {
        "readings": [
            {**_example(heart_rate), "steps": _EXAMPLE_VALUES["steps"]},
            _example(calories, timestamp="2024-01-15T10:01:00Z"),
            _example(steps, timestamp="2024-01-15T10:01:00Z", device_id="device_b"),
        ]
    }
    return request_body(shape.json_schema(), example)
