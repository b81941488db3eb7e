"""Recovery: the WALs of dead workers replayed into fragments.

A worker holds ``wal/<worker>.lock`` for its whole life; a lock that can be taken
without waiting therefore belongs to a dead worker, whose segments are replayed into
fragments, committed to the manifest, and only then deleted. Replaying the same rows
twice is harmless: queries and compaction de-duplicate by reading identity (and a shared
table skips the rows its transaction for that WAL already holds, see ``delta``).
"""

from __future__ import annotations

import logging
import time

import polars as pl
from filelock import Timeout

from service.storage.files import private_lock, unlink_quietly
from service.storage.store import Store
from service.storage.wal import list_segments, lock_path, read_segment, to_frame

log = logging.getLogger("service.storage")


def replay_orphans(store: Store) -> int:
    """Replay every dead worker's WAL into fragments; return the rows replayed.

    Only workers with segments are candidates: a worker takes its lock before it creates
    its first segment, so a lock file without segments may belong to a worker that is
    starting right now, and must not be touched (see ``_drop_stale_locks``).
    """
    workers = set(list_segments(store.wal_dir))
    workers.discard(store.worker)
    rows = sum(_replay(store, worker) for worker in sorted(workers))
    _drop_stale_locks(store)
    return rows


def _drop_stale_locks(store: Store, min_age_s: float = 300.0) -> None:
    """Remove lock files that have no segments and are long unheld (a worker that died
    between taking its lock and creating its first segment)."""
    with_segments = set(list_segments(store.wal_dir))
    cutoff = time.time() - min_age_s
    for path in store.wal_dir.glob("*.lock"):
        if path.stem in with_segments or path.stem == store.worker:
            continue
        try:
            if path.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        lock = private_lock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            path.unlink(missing_ok=True)
        finally:
            lock.release()


def _replay(store: Store, worker: str) -> int:
    lock = private_lock(lock_path(store.wal_dir, worker))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return 0  # its owner is alive
    try:
        segments = list_segments(store.wal_dir).get(worker, [])
        frames = [frame for path in segments for frame in read_segment(path)]
        tables: dict[str, pl.DataFrame] = {
            metric: to_frame(frames, metric) for metric in {f.metric for f in frames}
        }
        store.publish(tables, owner=worker)
        unlink_quietly(segments)
        rows = sum(t.height for t in tables.values())
        if segments:
            log.info(
                "replayed %d rows from %d WAL segments of dead worker %s",
                rows,
                len(segments),
                worker,
                extra={
                    "fields": {
                        "event": "recovery",
                        "rows": rows,
                        "segments": len(segments),
                        "dead_worker": worker,
                    }
                },
            )
        return rows
    finally:
        lock.release()
        lock_path(store.wal_dir, worker).unlink(missing_ok=True)
