"""Upkeep: one loop (the "flush loop") runs a worker's background duties when due.

Flush on size or interval; replay dead workers' WALs; start a compaction pass; refresh
the storage gauges; stop the worker when its gunicorn master is gone. A duty that fails
is counted and retried: the loop itself never ends while the worker runs (if it does,
the worker stops so that gunicorn starts a fresh one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time

import anyio

from service import metrics
from service.config import Settings
from service.ingest.buffer import Buffer
from service.ingest.compactor import Compactor
from service.ingest.flusher import Flusher
from service.ingest.health import TaskHealth
from service.storage.recovery import replay_orphans
from service.storage.store import Store
from service.storage.tombstones import Tombstone

log = logging.getLogger("service.ingest")


class Upkeep:
    """Runs the flush loop as a task; ``wake`` makes it look at once (a full buffer)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        buffer: Buffer,
        flusher: Flusher,
        compactor: Compactor,
        health: TaskHealth,
        wake: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._store = store
        self._buffer = buffer
        self._flusher = flusher
        self._compactor = compactor
        self._health = health
        self.wake = wake
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._exiting = False  # this worker asked itself to stop (its master is gone)
        self._tombstones: tuple[Tombstone, ...] = ()  # the erasures seen so far

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="flush loop")
        self._task.add_done_callback(self._ended)

    def cancel(self) -> asyncio.Task[None] | None:
        """Stop the loop; the task to wait for."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        return self._task

    async def recover(self) -> int:
        """Replay the WALs of dead workers (their owner locks are free)."""
        try:
            # erasures begun on other machines sharing the table: hidden here from now on
            await anyio.to_thread.run_sync(self._store.sync_erasures)
            rows = await anyio.to_thread.run_sync(replay_orphans, self._store)
        except Exception as exc:
            self._health.failed("recovery", exc)
            return 0
        self._health.succeeded("recovery")
        metrics.RECOVERED_ROWS.inc(rows)
        return rows

    async def _run(self) -> None:
        st = self._settings
        due = {
            "recover": time.monotonic() + st.recovery_interval_s,
            "compact": time.monotonic() + st.compact_interval_s,
        }
        while True:
            wait = min(self._flusher.next_due(), *due.values()) - time.monotonic()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives in the same loop turn as the wake-up, and stop() then waited forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await self.wake.wait()
            self.wake.clear()
            try:
                await self._tick_once(due)
            except Exception as exc:
                await asyncio.sleep(self._health.failed("flush loop", exc))
                continue
            if self._health.failures.get("flush loop"):
                self._health.succeeded("flush loop")
            if st.master_pid and os.getppid() != st.master_pid:
                # the gunicorn master is gone: stop like on SIGTERM (flush, then exit)
                log.error("gunicorn master %d is gone; shutting down", st.master_pid)
                self._exit_worker()
                return

    async def _tick_once(self, due: dict[str, float]) -> None:
        st = self._settings
        now = time.monotonic()
        await self._flusher.flush_if_due(now)
        await self._flush_for_erasure()
        if now >= due["recover"]:
            await self.recover()
            due["recover"] = time.monotonic() + st.recovery_interval_s
        if now >= due["compact"]:
            # due again an interval later whether or not the last pass still runs: a due
            # time left in the past would wake this loop every 10 ms for the whole pass
            self._compactor.launch()
            due["compact"] = time.monotonic() + st.compact_interval_s
        try:
            await anyio.to_thread.run_sync(self._observe)
        except Exception as exc:  # a gauge is not worth a retry delay: the next tick tries
            self._health.failed("storage gauges", exc)
        else:
            self._health.succeeded("storage gauges")

    async def _flush_for_erasure(self) -> None:
        """Flush at once when an erase began: the flush leaves the erased rows out, and the
        WAL segments that held them go (see ``storage.erasure``)."""
        snapshot = await anyio.to_thread.run_sync(self._store.manifest.read)
        stones = snapshot.tombstones
        if stones == self._tombstones:
            return
        fresh = any(t.done is None and t not in self._tombstones for t in stones)
        self._tombstones = stones
        if fresh and self._buffer.rows:
            await self._flusher.flush()

    def _observe(self) -> None:
        """Refresh the gauges that describe storage rather than requests."""
        metrics.OLDEST_UNFLUSHED_SECONDS.set(self._buffer.oldest_age_s())
        levels: dict[int, int] = {}
        for f in self._store.manifest.read().fragments:
            levels[f.level] = levels.get(f.level, 0) + 1
        for level in range(3):
            metrics.MANIFEST_FRAGMENTS.labels(str(level)).set(levels.get(level, 0))
        metrics.DISK_FREE_BYTES.set(shutil.disk_usage(self._store.root).free)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The flush loop stopped: unless the worker is stopping, it is broken for good,
        so it reports not ready and stops, and gunicorn starts a fresh one."""
        if self._stopping or self._exiting:
            return
        error = None if task.cancelled() else task.exception()
        self._health.ended = f"the {task.get_name()} ended" + (f": {error!r}" if error else "")
        log.critical("%s; the worker stops so that a fresh one replaces it", self._health.ended)
        if self._settings.master_pid:  # under gunicorn; elsewhere /ready reports it
            self._exit_worker()

    def _exit_worker(self) -> None:
        self._exiting = True
        os.kill(os.getpid(), signal.SIGTERM)
