"""Compaction passes in a child process: started when there is work, counted here.

The child holds the merge's memory and CPU: the worker's resident memory stays flat
(what a merge allocates goes back to the system when the child exits), the merge never
competes with request handling for the worker's GIL, and the worker's flushes go on
meanwhile (a pass runs as its own task beside the flush loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio

from service import metrics
from service.config import Settings
from service.ingest.health import TaskHealth
from service.storage.compaction import Report, is_compacting
from service.storage.compaction_policy import has_work, is_behind
from service.storage.retention import Retention
from service.storage.retention import has_work as expires
from service.storage.store import Store

log = logging.getLogger("service.ingest")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where ``-m service...`` is found


class Compactor:
    """Supervises this worker's compaction child: one pass at a time, stopped with it."""

    def __init__(self, settings: Settings, store: Store, health: TaskHealth) -> None:
        self._settings = settings
        self._store = store
        self._health = health
        self._task: asyncio.Task[None] | None = None
        self._child: subprocess.Popen[bytes] | None = None  # the running child, if any
        self._stopping = False

    def launch(self) -> bool:
        """Start a pass as its own task; False when the last one is still running."""
        if self._task is not None and not self._task.done():
            return False
        # beside the flushes, never in their way: a pass can take seconds, and
        # rows would pile up in the buffer meanwhile
        self._task = asyncio.create_task(self.compact(), name="compaction")
        return True

    def cancel(self) -> asyncio.Task[None] | None:
        """Stop the running pass, if any; the task to wait for (it returns once its
        process has exited)."""
        self._stopping = True
        child = self._child
        if child is not None and child.poll() is None:
            # the pass stops cleanly (its merge in progress deletes what it wrote) instead
            # of outliving the worker if gunicorn's graceful timeout runs out first
            child.terminate()
        if self._task is not None:
            self._task.cancel()
        return self._task

    async def compact(self) -> None:
        """One compaction pass in a child process, if no other process is compacting."""
        started = time.perf_counter()
        try:
            report = await self._compact_in_child()
        except Exception as exc:
            if self._stopping:
                log.info("compaction stopped with the worker")
            else:  # retried at the next interval
                self._health.failed("compaction", exc)
            return
        self._health.succeeded("compaction")
        if report is not None:
            _count(report, time.perf_counter() - started)

    async def _compact_in_child(self) -> Report | None:
        st = self._settings
        retention = Retention(st.retention_days, st.rollup_retention_days)
        if is_compacting(self._store) or not await anyio.to_thread.run_sync(
            lambda: (
                has_work(self._store, min_files=st.compact_min_files, grace_s=st.compact_grace_s)
                or expires(self._store.manifest.read(), retention)
            )
        ):
            return None  # no process start for nothing (a second or more of CPU each)
        behind = await anyio.to_thread.run_sync(
            lambda: is_behind(self._store, min_files=st.compact_min_files)
        )
        # the child writes no metrics of its own: the worker counts its report
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        # started and waited for in a thread: the event loop goes on serving meanwhile
        status, out = await anyio.to_thread.run_sync(self._run_child, self._args(behind), env)
        if status != 0:
            raise OSError(f"the compaction process exited with status {status}")
        fields = json.loads(out)
        if fields is None:
            return None
        metrics.COMPACTION_PEAK_RSS_BYTES.set(fields.pop("peak_rss_bytes"))
        return Report(**fields)

    def _args(self, behind: bool) -> list[str]:
        st = self._settings
        return [
            *("-m", "service.compaction_process", "--data-dir", str(self._store.root.resolve())),
            # below the workers' priority: requests first, merges with what is left; but
            # when ingestion outruns the merges, they compete as equals, or the files to
            # merge (and every query's work) would grow for as long as the load lasts
            *("--nice", "0" if behind else "10", "--stop-with-parent"),
            *("--min-files", str(st.compact_min_files)),
            *("--grace-s", str(st.compact_grace_s), "--max-rows", str(st.compact_max_rows)),
            *("--retention-days", str(st.retention_days)),
            *("--rollup-retention-days", str(st.rollup_retention_days)),
        ]

    def _run_child(self, args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
        child = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, env=env, cwd=_PROJECT_ROOT
        )
        self._child = child
        try:
            if self._stopping:  # cancel() ran before the process existed
                child.terminate()
            out, _ = child.communicate()
        finally:
            self._child = None
        return child.returncode, out


def _count(report: Report, elapsed: float) -> None:
    # the child writes no metrics: what it found is counted here
    metrics.QUARANTINED_FILES.inc(report.quarantined)
    metrics.ORPHAN_FILES_REMOVED.inc(report.orphans)
    if report.files_in:
        metrics.COMPACTION_SECONDS.observe(elapsed)
        metrics.COMPACTION_FILES.labels("in").inc(report.files_in)
        metrics.COMPACTION_FILES.labels("out").inc(report.files_out)
        metrics.COMPACTION_DUPLICATES.inc(report.duplicates)
        metrics.COMPACTION_REPLACED.inc(report.replaced)
