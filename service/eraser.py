"""One erase, as ``DELETE /users/<user_id>`` runs it: tombstone, count, flush, rewrite.

The tombstone first (every worker's next query hides the user's rows), then the count of
what it hides, then this worker's own flush (its WAL segments go), then ``finish`` until
no file holds an erased row or ``wait_s`` has passed. Other workers flush at their next
upkeep tick (at least every ``HR_RECOVERY_INTERVAL_S``); what is still pending then is
finished by the next compaction pass, hence the bound the receipt states.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

import anyio

from service.config import Settings
from service.ingest.flusher import Flusher
from service.storage import erasure
from service.storage.erasure import Unflushed
from service.storage.store import Store

POLL_S = 0.2  # between two ``finish`` calls while other workers' WALs still hold rows


@dataclass(frozen=True, slots=True)
class Receipt:
    user_id: str
    erased_at: float  # epoch s: the cut-off; readings acknowledged later are kept
    readings_erased: int
    files_rewritten: int
    files_clean_by: float  # epoch s: when files held no erased row, or the latest they will


def wait_s(settings: Settings) -> float:
    """How long an erase waits for files to be clean before it answers."""
    return settings.recovery_interval_s + settings.lock_timeout_s


def bound_s(settings: Settings) -> float:
    """How long after the erase began files are clean at the latest on a healthy server:
    other workers' next upkeep tick, then the next compaction pass."""
    return wait_s(settings) + settings.compact_interval_s


async def erase(
    settings: Settings, store: Store, flusher: Flusher, unflushed: Unflushed, user_id: str
) -> Receipt:
    tomb = await anyio.to_thread.run_sync(erasure.begin, store, user_id)
    count = await anyio.to_thread.run_sync(erasure.readings_under, store, unflushed, tomb)
    await flusher.flush()
    deadline = time.monotonic() + wait_s(settings)
    rewritten = 0
    while True:
        left = max(deadline - time.monotonic(), 0.0)
        progress = await anyio.to_thread.run_sync(partial(erasure.finish, store, wait_s=left))
        if progress is not None:
            rewritten += progress.files_rewritten
            if progress.done:
                return Receipt(user_id, tomb.at, count, rewritten, time.time())
        if time.monotonic() >= deadline:
            return Receipt(user_id, tomb.at, count, rewritten, tomb.at + bound_s(settings))
        await asyncio.sleep(POLL_S)
