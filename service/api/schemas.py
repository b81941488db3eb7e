"""Response models: they document the API in OpenAPI; bodies are built without them."""

from __future__ import annotations

from pydantic import BaseModel


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


class RecordsAccepted(BatchAccepted):
    by_metric: dict[str, int]  # readings stored per metric
