"""The per-worker objects routes use (settings, store, ingestor, reader, user index), made
in the lifespan after fork and found through the app's state."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import State

from service.config import Settings
from service.errors import Unavailable
from service.ingest.ingestor import Ingestor
from service.query.reader import Reader
from service.query.users import UserIndex
from service.storage.store import Store


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    store: Store
    ingestor: Ingestor
    reader: Reader
    users: UserIndex


def worker_context(state: State) -> WorkerContext:
    """The worker's context from the app's ``state``; 503 while it starts or stops."""
    found = getattr(state, "context", None)
    if not isinstance(found, WorkerContext):
        raise Unavailable("the worker is starting or stopping")
    return found
