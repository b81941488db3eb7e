"""Group commit: one WAL append (and fsync) for every request that queued meanwhile.

Invariants: a reading is in a WAL segment (written, and fsynced in ``fsync`` mode) and
in the buffer before ``submit`` returns; every waiting request gets an answer, whatever
fails; readings get sequence numbers in submission order, so a later write wins. In
``none`` durability there is no WAL and rows go straight to the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import anyio

from service import metrics
from service.config import Settings
from service.errors import Overloaded, ServiceError, StorageFull, Unavailable
from service.ingest.buffer import Buffer
from service.ingest.health import TaskHealth
from service.schema import Rows
from service.storage.store import Store
from service.storage.tombstones import Tombstone
from service.storage.wal import OwnedLog, encode_frame

# metric, rows, submitted at (monotonic), the waiting request (one request's entries for
# several metrics share its future: the first answer of their group settles it)
_Pending = tuple[str, Rows, float, "asyncio.Future[None]"]


class GroupCommitter:
    """This worker's WAL: groups of requests appended to it, segments sealed for flushes."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        buffer: Buffer,
        health: TaskHealth,
        wake: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._store = store
        self._buffer = buffer
        self._health = health
        self._wake = wake  # set when the buffer holds a flush's worth of rows
        self._log: OwnedLog | None = None
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._io_lock = asyncio.Lock()
        # group commits run here: one thread, no pool or limiter bookkeeping per write
        self._wal_thread = ThreadPoolExecutor(1, thread_name_prefix="wal")
        self._last_seq = 0

    @property
    def has_wal(self) -> bool:
        return self._log is not None

    async def open(self) -> None:
        """Take ownership of a fresh WAL segment (none in ``none`` durability)."""
        if self._settings.durability != "none":
            self._log = await anyio.to_thread.run_sync(
                OwnedLog, self._store.wal_dir, self._store.worker
            )

    async def submit(self, metric: str, rows: Rows) -> None:
        """Return once ``rows`` are durable as the durability mode defines it."""
        # not a call of submit_many: the extra coroutine, dict and list cost ~1.7 us a
        # single reading (~5% of its request)
        if self._buffer.rows + len(rows) > self._settings.max_buffer_rows:
            raise self._overloaded()
        if self._log is None:
            self._buffer.add(metric, rows, self._reserve(len(rows)))
            self._after_add()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((metric, rows, time.monotonic(), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        # a cancelled request cancels only its own future: the group still commits
        await future

    async def submit_many(self, parts: Mapping[str, Rows]) -> None:
        """``submit`` for several metrics at once: their rows are queued in one step, so
        one group commit makes them all durable (or fails them all), and a full buffer
        refuses them all."""
        if self._buffer.rows + sum(map(len, parts.values())) > self._settings.max_buffer_rows:
            raise self._overloaded()
        if self._log is None:
            for metric, rows in parts.items():
                self._buffer.add(metric, rows, self._reserve(len(rows)))
            self._after_add()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        submitted = time.monotonic()
        self._pending += [(metric, rows, submitted, future) for metric, rows in parts.items()]
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        await future

    async def seal(self) -> float:
        """Start a flush: seal the WAL segment and move the buffer's active rows to its
        flushing generation in one step, so that the rows flushed are exactly those of the
        sealed segments. Returns the age (s) of the oldest row to flush."""
        async with self._io_lock:
            if self._log is not None:
                await anyio.to_thread.run_sync(self._log.rotate)
            oldest = self._buffer.oldest_age_s()
            self._buffer.begin_flush()
        return oldest

    async def drop_sealed(self) -> None:
        """Delete the sealed segments: their rows are in the manifest now."""
        if self._log is not None:
            await anyio.to_thread.run_sync(self._log.drop_sealed)

    async def wait_idle(self) -> None:
        """Return once every queued request has been answered."""
        while self._drainer is not None and not self._drainer.done():
            await self._drainer

    async def close(self, *, delete: bool) -> None:
        """Give up the WAL (deleting its files when ``delete``) and the commit thread."""
        if self._log is not None:
            await anyio.to_thread.run_sync(self._close_log, delete)
        self._wal_thread.shutdown(wait=False)

    def _close_log(self, delete: bool) -> None:
        if self._log is not None:
            self._log.close(delete=delete)
            self._log = None

    def _overloaded(self) -> Overloaded:
        self._health.overloaded()
        return Overloaded(f"{self._buffer.rows} rows wait for a flush; try again shortly")

    def _reserve(self, count: int) -> int:
        first = max(time.time_ns(), self._last_seq + 1)
        self._last_seq = first + count - 1
        return first

    def _after_add(self) -> None:
        metrics.BUFFER_ROWS.set(self._buffer.rows)
        if self._buffer.active_rows >= self._settings.flush_rows:
            self._wake.set()

    async def _drain(self) -> None:
        # one write + fsync covers every request that queued while the previous one ran
        while self._pending:
            group, self._pending = self._pending, []
            try:
                error = await self._commit(group)
            except Exception as exc:  # every waiting request gets an answer, whatever broke
                self._health.failed("group commit", exc)
                error = Unavailable(f"the write-ahead log could not be written: {exc!r}")
            except BaseException:
                _answer(group, Unavailable("the worker is stopping"))
                raise
            else:
                if error is None and self._health.failures:
                    self._health.succeeded("group commit")
            _answer(group, error)

    async def _commit(self, group: list[_Pending]) -> ServiceError | None:
        """Write ``group`` to the WAL as one append; the error to answer it with, if any."""
        # one WAL frame per metric for the whole group: a reader decodes a frame per
        # group commit, not one per request (at ~9 us a frame, other workers' queries
        # spent tens of ms a call on frames of one reading each)
        merged = _merge(group)
        parts = [(metric, self._reserve(len(rows)), rows) for metric, rows in merged.items()]
        data = b"".join(encode_frame(*part) for part in parts)
        async with self._io_lock:
            error = await self._write_group(data)
            if error is not None:
                return error
            # written to the WAL: every worker's queries can read these rows now
            visible = time.monotonic()
            for metric, first_seq, rows in parts:
                self._buffer.add(metric, rows, first_seq)
            error = await self._outlive_erasures(parts)
            if error is not None:
                return error
            for _, _, submitted, _ in group:
                metrics.tally.observe(metrics.READ_AFTER_WRITE_LAG_SECONDS, visible - submitted)
        metrics.WAL_GROUP_READINGS.observe(sum(len(item[1]) for item in group))
        self._after_add()
        return None

    async def _outlive_erasures(self, parts: list[tuple[str, int, Rows]]) -> ServiceError | None:
        """Rows of a user whose erase began while they were being written would be erased
        (their sequence is below its cut-off) though they are acknowledged after it began:
        they are written again with new sequences, above the cut-off, before the answer."""
        try:
            tombstones = self._store.manifest.read().tombstones  # a stat when unchanged
        except (OSError, ValueError):  # an unreadable manifest is /ready's business
            return None
        again = [
            (metric, self._reserve(len(rows)), rows)
            for metric, rows in overtaken(parts, tombstones)
        ]
        if not again:
            return None
        error = await self._write_group(b"".join(encode_frame(*part) for part in again))
        if error is None:
            for metric, first_seq, rows in again:
                self._buffer.add(metric, rows, first_seq)
        return error

    async def _write_group(self, data: bytes) -> ServiceError | None:
        owned = self._log
        assert owned is not None
        sync = self._settings.durability == "fsync"
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._wal_thread, _write, owned, data, sync
            )
        except OSError as exc:
            self._health.failed("group commit", exc)  # logged and counted there
            # after a failed write or fsync the segment's tail is unknown: start a new one
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(owned.rotate)
            return StorageFull(f"the write-ahead log could not be written: {exc.strerror}")
        except Exception as exc:  # never leave the waiting requests hanging
            self._health.failed("group commit", exc)
            return Unavailable(f"the write-ahead log could not be written: {exc}")
        metrics.WAL_FSYNC_SECONDS.observe(time.perf_counter() - started)
        metrics.WAL_APPENDS.inc()
        metrics.WAL_BYTES.inc(len(data))
        return None


def _answer(group: list[_Pending], error: ServiceError | None) -> None:
    for *_, future in group:
        if future.done():  # its request was cancelled, or answered by its first entry
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def overtaken(
    parts: list[tuple[str, int, Rows]], tombstones: tuple[Tombstone, ...]
) -> list[tuple[str, Rows]]:
    """The rows of ``parts`` (metric, first sequence, rows) that a tombstone listed after
    their sequences were taken would erase."""
    cut = {t.user_id: t.before for t in tombstones}
    if not cut or not any(first < max(cut.values()) for _, first, _ in parts):
        return []  # the usual case: no erase, or none since these sequences were taken
    found = []
    for metric, first, rows in parts:
        redo = Rows()
        for i, user in enumerate(rows.user_id):
            if first + i < cut.get(user, 0):
                redo.add(user, rows.device_id[i], rows.ts[i], rows.value[i])
        if redo:
            found.append((metric, redo))
    return found


def _merge(group: list[_Pending]) -> dict[str, Rows]:
    """The group's rows per metric, in submission order (so later writes win)."""
    if len(group) == 1:
        return {group[0][0]: group[0][1]}
    merged: dict[str, Rows] = {}
    for metric, rows, _, _ in group:
        into = merged.get(metric)
        if into is None:
            merged[metric] = into = Rows()
        into.extend(rows)
    return merged


def _write(owned: OwnedLog, data: bytes, sync: bool) -> None:
    owned.current.append(data)
    if sync:
        owned.current.sync()
