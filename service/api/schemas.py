"""Response models: they document the API in OpenAPI; bodies are built without them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
