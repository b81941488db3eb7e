"""The per-worker write path: WAL with group commit -> buffer -> flush to fragments.

Invariants: a reading is in a WAL segment (written, and fsynced in ``fsync`` mode)
before ``submit`` returns; a sealed segment is deleted only after the fragment holding
its rows is in the manifest; the buffer keeps flushing rows visible until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio

from service import metrics
from service.config import Settings
from service.errors import Overloaded, ServiceError, StorageFull, Unavailable
from service.ingest.buffer import Buffer
from service.ingest.health import TaskHealth
from service.storage.compaction import Report, is_compacting
from service.storage.compaction_policy import has_work, is_behind
from service.storage.ownership import OwnedLog, replay_orphans
from service.storage.store import Store
from service.storage.wal import encode_frame
from service.validation import Rows

log = logging.getLogger("service.ingest")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where ``-m service...`` is found

# metric, rows, submitted at (monotonic), the waiting request
_Pending = tuple[str, Rows, float, "asyncio.Future[None]"]


class Ingestor:
    def __init__(self, settings: Settings, store: Store, buffer: Buffer) -> None:
        self._settings = settings
        self._store = store
        self.buffer = buffer
        self._log: OwnedLog | None = None
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._io_lock = asyncio.Lock()
        # group commits run here: one thread, no pool or limiter bookkeeping per write
        self._wal_thread = ThreadPoolExecutor(1, thread_name_prefix="wal")
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._compacting: asyncio.Task[None] | None = None
        self._compactor: subprocess.Popen[bytes] | None = None  # the running child, if any
        self._stopping = False
        self._exiting = False  # this worker asked itself to stop (its master is gone)
        self._last_seq = 0
        self._last_flush = time.monotonic()
        self._flush_not_before = 0.0  # monotonic; a failed flush waits before its retry
        self.health = TaskHealth()

    async def start(self) -> None:
        """Take ownership of a fresh WAL, replay dead workers' logs, start the ticker."""
        await anyio.to_thread.run_sync(self._store.ensure_layout)
        if self._settings.durability != "none":
            self._log = await anyio.to_thread.run_sync(OwnedLog, self._store)
        await self.recover()
        self._ticker = asyncio.create_task(self._tick(), name="flush loop")
        self._ticker.add_done_callback(self._ended)

    async def stop(self) -> None:
        """Flush everything; on success the WAL files go too."""
        self._stopping = True
        child = self._compactor
        if child is not None and child.poll() is None:
            # the pass stops cleanly (its merge in progress deletes what it wrote) instead
            # of outliving the worker if gunicorn's graceful timeout runs out first
            child.terminate()
        tasks = [t for t in (self._ticker, self._compacting) if t is not None]
        for task in tasks:
            task.cancel()  # a compaction task returns once its process has exited
        if tasks:
            # asyncio.wait: their cancellation is not raised here, but a cancellation of
            # stop() itself still is (suppressing CancelledError around ``await task``
            # would swallow both)
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.error("%s ended with an error", task.get_name(), exc_info=error)
        while self._drainer is not None and not self._drainer.done():
            await self._drainer
        flushed = await self.flush()
        if self._log is not None:
            await anyio.to_thread.run_sync(self._close_log, flushed)
        self._wal_thread.shutdown(wait=False)

    def _close_log(self, flushed: bool) -> None:
        if self._log is not None:
            self._log.close(delete=flushed)
            self._log = None

    async def submit(self, metric: str, rows: Rows) -> None:
        """Return once ``rows`` are durable as the durability mode defines it."""
        if self.buffer.rows + len(rows) > self._settings.max_buffer_rows:
            self.health.overloaded()
            raise Overloaded(f"{self.buffer.rows} rows wait for a flush; try again shortly")
        if self._log is None:
            self.buffer.add(metric, rows, self._reserve(len(rows)))
            self._after_add()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((metric, rows, time.monotonic(), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        # a cancelled request cancels only its own future: the group still commits
        await future

    def problems(self) -> list[str]:
        """Why this worker should not get traffic: failing or ended tasks, full buffers."""
        found = self.health.problems()
        if self.buffer.rows >= self._settings.max_buffer_rows and not any(
            "buffers are full" in p for p in found
        ):
            found.append("buffers are full: ingestion answers 503 until a flush makes room")
        return found

    def _reserve(self, count: int) -> int:
        first = max(time.time_ns(), self._last_seq + 1)
        self._last_seq = first + count - 1
        return first

    def _after_add(self) -> None:
        metrics.BUFFER_ROWS.set(self.buffer.rows)
        if self.buffer.active_rows >= self._settings.flush_rows:
            self._wake.set()

    async def _drain(self) -> None:
        # one write + fsync covers every request that queued while the previous one ran
        while self._pending:
            group, self._pending = self._pending, []
            try:
                error = await self._commit(group)
            except Exception as exc:  # every waiting request gets an answer, whatever broke
                self.health.failed("group commit", exc)
                error = Unavailable(f"the write-ahead log could not be written: {exc!r}")
            except BaseException:
                _answer(group, Unavailable("the worker is stopping"))
                raise
            else:
                if self.health.failures:
                    self.health.succeeded("group commit")
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
                self.buffer.add(metric, rows, first_seq)
            for _, _, submitted, _ in group:
                metrics.tally.observe(metrics.READ_AFTER_WRITE_LAG_SECONDS, visible - submitted)
        metrics.WAL_GROUP_READINGS.observe(sum(len(item[1]) for item in group))
        self._after_add()
        return None

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
            log.error("WAL write failed: %s", exc)
            # after a failed write or fsync the segment's tail is unknown: start a new one
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(owned.rotate)
            return StorageFull(f"the write-ahead log could not be written: {exc.strerror}")
        except Exception as exc:  # never leave the waiting requests hanging
            log.exception("WAL write failed")
            return Unavailable(f"the write-ahead log could not be written: {exc}")
        metrics.WAL_FSYNC_SECONDS.observe(time.perf_counter() - started)
        metrics.WAL_APPENDS.inc()
        metrics.WAL_BYTES.inc(len(data))
        return None

    async def flush(self) -> bool:
        """Move buffered rows into a fragment; True when nothing is left unflushed."""
        async with self._flush_lock:
            async with self._io_lock:
                if self._log is not None:
                    await anyio.to_thread.run_sync(self._log.rotate)
                oldest = self.buffer.oldest_age_s()
                self.buffer.begin_flush()
            self._last_flush = time.monotonic()
            rows = self.buffer.flushing_rows
            started = time.perf_counter()
            try:
                await anyio.to_thread.run_sync(
                    lambda: self._store.publish(self.buffer.flushing_frames())
                )
            except Exception as exc:  # a full disk surfaces as OSError or Polars' errors
                metrics.FLUSH_FAILURES.inc()
                delay = self.health.failed("flush", exc)
                self._flush_not_before = time.monotonic() + delay
                return False
            self.health.succeeded("flush")
            self.buffer.end_flush()
            if self._log is None and rows:
                # without a WAL other workers see rows once flushed: the oldest waited most
                metrics.READ_AFTER_WRITE_LAG_SECONDS.observe(oldest + time.perf_counter() - started)
            if self._log is not None:
                await anyio.to_thread.run_sync(self._log.drop_sealed)
            metrics.BUFFER_ROWS.set(self.buffer.rows)
            if rows:
                elapsed = time.perf_counter() - started
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
            return True

    async def recover(self) -> int:
        """Replay the WALs of dead workers (their owner locks are free)."""
        try:
            rows = await anyio.to_thread.run_sync(replay_orphans, self._store)
        except Exception as exc:
            self.health.failed("recovery", exc)
            return 0
        self.health.succeeded("recovery")
        metrics.RECOVERED_ROWS.inc(rows)
        return rows

    async def compact(self) -> None:
        """One compaction pass in a child process, if no other process is compacting.

        The child holds the merge's memory and CPU: the worker's resident memory stays
        flat (what a merge allocates goes back to the system when the child exits), the
        merge never competes with request handling for the worker's GIL, and the worker's
        flushes go on meanwhile (this runs as its own task beside the flush loop).
        """
        started = time.perf_counter()
        try:
            report = await self._compact_in_child()
        except Exception as exc:
            if self._stopping:
                log.info("compaction stopped with the worker")
            else:  # retried at the next interval
                self.health.failed("compaction", exc)
            return
        self.health.succeeded("compaction")
        if report is not None:
            # the child writes no metrics: what it found is counted here
            metrics.QUARANTINED_FILES.inc(report.quarantined)
            metrics.ORPHAN_FILES_REMOVED.inc(report.orphans)
        if report is not None and report.files_in:
            metrics.COMPACTION_SECONDS.observe(time.perf_counter() - started)
            metrics.COMPACTION_FILES.labels("in").inc(report.files_in)
            metrics.COMPACTION_FILES.labels("out").inc(report.files_out)
            metrics.COMPACTION_DUPLICATES.inc(report.duplicates)
            metrics.COMPACTION_REPLACED.inc(report.replaced)

    async def _compact_in_child(self) -> Report | None:
        st = self._settings
        if is_compacting(self._store) or not await anyio.to_thread.run_sync(
            lambda: has_work(
                self._store, min_files=st.compact_min_files, grace_s=st.compact_grace_s
            )
        ):
            return None  # no process start for nothing (a second or more of CPU each)
        behind = await anyio.to_thread.run_sync(
            lambda: is_behind(self._store, min_files=st.compact_min_files)
        )
        args = [
            *("-m", "service.maintenance", "--data-dir", str(self._store.root.resolve())),
            # below the workers' priority: requests first, merges with what is left; but
            # when ingestion outruns the merges, they compete as equals, or the files to
            # merge (and every query's work) would grow for as long as the load lasts
            *("compact", "--json", "--nice", "0" if behind else "10", "--stop-with-parent"),
            *("--min-files", str(st.compact_min_files)),
            *("--grace-s", str(st.compact_grace_s), "--max-rows", str(st.compact_max_rows)),
        ]
        # the child writes no metrics of its own: the worker counts its report
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        # started and waited for in a thread: the event loop goes on serving meanwhile
        status, out = await anyio.to_thread.run_sync(self._run_child, args, env)
        if status != 0:
            raise OSError(f"the compaction process exited with status {status}")
        fields = json.loads(out)
        if fields is None:
            return None
        metrics.COMPACTION_PEAK_RSS_BYTES.set(fields.pop("peak_rss_bytes"))
        return Report(**fields)

    def _run_child(self, args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
        child = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, env=env, cwd=_PROJECT_ROOT
        )
        self._compactor = child
        try:
            if self._stopping:  # stop() ran before the process existed
                child.terminate()
            out, _ = child.communicate()
        finally:
            self._compactor = None
        return child.returncode, out

    def _observe(self) -> None:
        """Refresh the gauges that describe storage rather than requests."""
        metrics.OLDEST_UNFLUSHED_SECONDS.set(self.buffer.oldest_age_s())
        levels: dict[int, int] = {}
        for f in self._store.manifest.read().fragments:
            levels[f.level] = levels.get(f.level, 0) + 1
        for level in range(3):
            metrics.MANIFEST_FRAGMENTS.labels(str(level)).set(levels.get(level, 0))
        metrics.DISK_FREE_BYTES.set(shutil.disk_usage(self._store.root).free)

    async def _tick(self) -> None:
        """Flush on size or interval; look for dead workers' WALs; compact; watch the
        master. A step that fails is counted and retried: the loop itself never ends
        while the worker runs (if it does, ``_ended`` has the worker replaced)."""
        st = self._settings
        due = {
            "recover": time.monotonic() + st.recovery_interval_s,
            "compact": time.monotonic() + st.compact_interval_s,
        }
        while True:
            next_flush = max(self._last_flush + st.flush_interval_s, self._flush_not_before)
            wait = min(next_flush, *due.values()) - time.monotonic()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives in the same loop turn as the wake-up, and stop() then waited forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._tick_once(due)
            except Exception as exc:
                await asyncio.sleep(self.health.failed("flush loop", exc))
                continue
            if self.health.failures.get("flush loop"):
                self.health.succeeded("flush loop")
            if st.master_pid and os.getppid() != st.master_pid:
                # the gunicorn master is gone: stop like on SIGTERM (flush, then exit)
                log.error("gunicorn master %d is gone; shutting down", st.master_pid)
                self._exit_worker()
                return

    async def _tick_once(self, due: dict[str, float]) -> None:
        st = self._settings
        now = time.monotonic()
        if now >= self._flush_not_before and (
            now >= self._last_flush + st.flush_interval_s
            or self.buffer.active_rows >= st.flush_rows
        ):
            if self.buffer.rows:
                await self.flush()
            self._last_flush = now
        if now >= due["recover"]:
            await self.recover()
            due["recover"] = time.monotonic() + st.recovery_interval_s
        if now >= due["compact"] and (self._compacting is None or self._compacting.done()):
            # beside the flushes, never in their way: a pass can take seconds, and
            # rows would pile up in the buffer meanwhile
            self._compacting = asyncio.create_task(self.compact(), name="compaction")
            due["compact"] = time.monotonic() + st.compact_interval_s
        try:
            await anyio.to_thread.run_sync(self._observe)
        except Exception as exc:  # a gauge is not worth a retry delay: the next tick tries
            self.health.failed("storage gauges", exc)
        else:
            self.health.succeeded("storage gauges")

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The flush loop stopped: unless the worker is stopping, it is broken for good,
        so it reports not ready and stops, and gunicorn starts a fresh one."""
        if self._stopping or self._exiting:
            return
        error = None if task.cancelled() else task.exception()
        self.health.ended = f"the {task.get_name()} ended" + (f": {error!r}" if error else "")
        log.critical("%s; the worker stops so that a fresh one replaces it", self.health.ended)
        if self._settings.master_pid:  # under gunicorn; elsewhere /ready reports it
            self._exit_worker()

    def _exit_worker(self) -> None:
        self._exiting = True
        os.kill(os.getpid(), signal.SIGTERM)


def _answer(group: list[_Pending], error: ServiceError | None) -> None:
    for *_, future in group:
        if future.done():  # its request was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


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
