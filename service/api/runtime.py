"""The per-worker objects routes use, created in the lifespan (after fork)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.config import Settings
from service.errors import Unavailable
from service.ingest.ingestor import Ingestor
from service.query.reader import Reader
from service.storage.store import Store


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    store: Store
    ingestor: Ingestor
    reader: Reader


def runtime(request: Request) -> Runtime:
    found = getattr(request.app.state, "runtime", None)
    if not isinstance(found, Runtime):
        raise Unavailable("the worker is starting or stopping")
    return found
