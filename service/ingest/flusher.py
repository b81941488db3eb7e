"""Flushing: the buffer's rows into one fragment, then their WAL segments deleted.

A sealed WAL segment is deleted only after the fragment holding its rows is in the
manifest; until then the buffer keeps the flushing rows visible to queries. A failed
flush keeps both and is retried after a delay that doubles with each failure in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anyio

from service import metrics
from service.config import Settings
from service.ingest.buffer import Buffer
from service.ingest.commit import GroupCommitter
from service.ingest.health import TaskHealth
from service.storage.store import Store

log = logging.getLogger("service.ingest")


class Flusher:
    """Flushes on size or interval (``flush_if_due``) or when asked (``flush``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        buffer: Buffer,
        committer: GroupCommitter,
        health: TaskHealth,
    ) -> None:
        self._settings = settings
        self._store = store
        self._buffer = buffer
        self._committer = committer
        self._health = health
        self._lock = asyncio.Lock()
        self._last = time.monotonic()
        self._not_before = 0.0  # monotonic; a failed flush waits before its retry

    def next_due(self) -> float:
        """When (monotonic) the interval next calls for a flush, retry delay included."""
        return max(self._last + self._settings.flush_interval_s, self._not_before)

    async def flush_if_due(self, now: float) -> None:
        """Flush if the buffer is full enough or the interval has passed since the last."""
        st = self._settings
        if now < self._not_before or (
            now < self._last + st.flush_interval_s and self._buffer.active_rows < st.flush_rows
        ):
            return
        if self._buffer.rows:
            await self.flush()
        self._last = now

    async def flush(self) -> bool:
        """Move buffered rows into a fragment; True when nothing is left unflushed."""
        async with self._lock:
            oldest = await self._committer.seal()
            self._last = time.monotonic()
            rows = self._buffer.flushing_rows
            started = time.perf_counter()
            try:
                await anyio.to_thread.run_sync(
                    lambda: self._store.publish(self._buffer.flushing_frames())
                )
            except Exception as exc:  # a full disk surfaces as OSError or Polars' errors
                metrics.FLUSH_FAILURES.inc()
                delay = self._health.failed("flush", exc)
                self._not_before = time.monotonic() + delay
                return False
            self._health.succeeded("flush")
            self._buffer.end_flush()
            if not self._committer.has_wal and rows:
                # without a WAL other workers see rows once flushed: the oldest waited most
                metrics.READ_AFTER_WRITE_LAG_SECONDS.observe(oldest + time.perf_counter() - started)
            await self._committer.drop_sealed()
            metrics.BUFFER_ROWS.set(self._buffer.rows)
            if rows:
                _count(rows, time.perf_counter() - started)
            return True


def _count(rows: int, elapsed: float) -> None:
    metrics.FLUSH_SECONDS.observe(elapsed)
    metrics.FLUSH_ROWS.inc(rows)
    log.info(
        "flushed %d rows in %.1f ms",
        rows,
        elapsed * 1000,
        extra={
            "fields": {
                "event": "flush",
                "rows": rows,
                "duration_ms": round(elapsed * 1000, 3),
            }
        },
    )
