"""The per-worker write path, started and stopped as one: WAL -> buffer -> fragments.

Its parts: ``commit`` (requests -> WAL with group commit -> buffer), ``flusher`` (buffer
-> fragment -> manifest, then the WAL segments go), ``compactor`` (compaction passes in a
child process) and ``upkeep`` (the loop that runs flushes, recovery and compaction when
due). Each part reports its failures to one ``TaskHealth``, which ``/ready`` reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import anyio

from service.config import Settings
from service.ingest.buffer import Buffer
from service.ingest.commit import GroupCommitter
from service.ingest.compactor import Compactor
from service.ingest.flusher import Flusher
from service.ingest.health import TaskHealth
from service.ingest.upkeep import Upkeep
from service.schema import Rows
from service.storage.store import Store

log = logging.getLogger("service.ingest")


class Ingestor:
    """What routes use: ``submit``, ``submit_many``, ``problems()``, ``buffer``, ``health``."""

    def __init__(self, settings: Settings, store: Store, buffer: Buffer) -> None:
        self._settings = settings
        self._store = store
        self.buffer = buffer
        self.health = TaskHealth()
        wake = asyncio.Event()  # a commit that fills the buffer wakes the flush loop
        self.committer = GroupCommitter(settings, store, buffer, self.health, wake)
        self.flusher = Flusher(settings, store, buffer, self.committer, self.health)
        self.compactor = Compactor(settings, store, self.health)
        self.upkeep = Upkeep(
            settings, store, buffer, self.flusher, self.compactor, self.health, wake
        )
        # the routes call the committer's method itself: no extra call or await per request
        self.submit: Callable[[str, Rows], Awaitable[None]] = self.committer.submit
        self.submit_many: Callable[[Mapping[str, Rows]], Awaitable[None]] = (
            self.committer.submit_many
        )

    async def start(self) -> None:
        """Take ownership of a fresh WAL, replay dead workers' logs, start the flush loop."""
        await anyio.to_thread.run_sync(self._store.ensure_layout)
        await self.committer.open()
        await self.upkeep.recover()
        self.upkeep.start()

    async def stop(self) -> None:
        """Flush everything; on success the WAL files go too."""
        tasks = [t for t in (self.upkeep.cancel(), self.compactor.cancel()) if t is not None]
        if tasks:
            # asyncio.wait: their cancellation is not raised here, but a cancellation of
            # stop() itself still is (suppressing CancelledError around ``await task``
            # would swallow both)
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.error("%s ended with an error", task.get_name(), exc_info=error)
        await self.committer.wait_idle()
        flushed = await self.flusher.flush()
        await self.committer.close(delete=flushed)

    def problems(self) -> list[str]:
        """Why this worker should not get traffic: failing or ended tasks, full buffers."""
        found = self.health.problems()
        if self.buffer.rows >= self._settings.max_buffer_rows and not any(
            "buffers are full" in p for p in found
        ):
            found.append("buffers are full: ingestion answers 503 until a flush makes room")
        return found
