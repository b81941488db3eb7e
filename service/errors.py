"""The error tree; ``service.api.errors`` turns these into HTTP (and nothing else does).

    ServiceError (500 internal)
    ├── InvalidInput (400 invalid_input)      bad body, field or query parameter
    ├── NotFound (404 not_found)              no readings in the requested range
    ├── PayloadTooLarge (413 payload_too_large)
    └── Unavailable (503 unavailable)         carries Retry-After
        ├── Overloaded (503 overloaded)       buffers full
        ├── StorageFull (503 storage_full)    disk full or write failed
        └── ManifestBusy (503 manifest_busy)  manifest lock not acquired in time

Each error carries its HTTP status and code; nothing here imports the web framework, so
the storage layer and the maintenance commands load without it.
"""

from __future__ import annotations

from typing import ClassVar

Detail = dict[str, str | int]


class ServiceError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, detail: list[Detail] | None = None) -> None:
        super().__init__(message)
        self.detail: list[Detail] = detail if detail is not None else [{"reason": message}]


class InvalidInput(ServiceError):
    status = 400
    code = "invalid_input"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


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


def field_error(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{field}: {reason}", [{"field": field, "reason": reason}])
