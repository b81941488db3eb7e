"""The change feed: which readings this server acknowledged since the last look.

Two sources, each read once per watcher tick whatever the number of streams: this
worker's own rows (told by ``Buffer.on_add`` right after their group commit) and the new
frames of the other workers' WAL segments (each segment is append-only, so only the bytes
past the last decoded frame are read; a new segment starts at 0). A segment is kept open
once seen, so the frames written just before its flush deleted it are still read from
the open file; only a segment created and deleted between two looks (a flush within
``tick``) would go unseen.

Only the readings of watched users are kept between ticks, and a segment's frames only
while it is read: a tick slowed by many streams must not hold every reading acknowledged
meanwhile (under ``ops/soak`` a worker held up to 134,000 rows between two ticks).

While nobody watches, neither source is read; ``resume`` then skips what was written in
the meantime (the new stream's snapshot, taken after it, holds those rows).
"""

from __future__ import annotations

import threading
from collections.abc import Container, Iterator
from pathlib import Path
from typing import BinaryIO

from service.schema import Rows
from service.storage.wal import decode_frames, list_segments

# (device_id, ts_ms, value, seq): one reading of a watched user
Reading = tuple[str, int, float, int]
# (metric, user_id) -> its readings: the changes of a watched user
Changes = dict[tuple[str, str], list[Reading]]
# (metric, rows, first seq) as a WAL frame holds them
Batch = tuple[str, Rows, int]


class ChangeFeed:
    def __init__(self, wal_dir: Path, worker: str) -> None:
        self._wal_dir = wal_dir
        self._worker = worker
        self._open: dict[Path, BinaryIO] = {}  # read up to the last whole frame
        self._own: Changes = {}
        self.active = False  # whether anybody watches: rows are recorded only then
        # the (metric, user) pairs watched now: the hub's own registry, read on the loop
        self.watched: Container[tuple[str, str]] = frozenset()
        self._lock = threading.Lock()  # the WAL offsets: one reader at a time

    def record(self, metric: str, rows: Rows, first_seq: int) -> None:
        """``Buffer.on_add``: this worker's readings of watched users, kept until the next
        ``take_own`` (a user watched from later on gets these rows from its snapshot)."""
        if self.active:
            _note(self._own, self.watched, metric, rows, first_seq)

    def take_own(self) -> Changes:
        """This worker's readings recorded since the last call (call it on the event loop)."""
        own, self._own = self._own, {}
        return own

    def resume(self) -> None:
        """Skip every frame written so far (blocking: it reads the new bytes)."""
        self.collect({}, ())

    def collect(self, own: Changes, watched: Container[tuple[str, str]]) -> Changes:
        """``own`` (from ``take_own``) with the readings of watched (metric, user) pairs in
        the other workers' new WAL frames added. Blocking."""
        with self._lock:
            for metric, rows, first_seq in self._read_others():
                _note(own, watched, metric, rows, first_seq)
        return own

    def close(self) -> None:
        with self._lock:
            for f in self._open.values():
                f.close()
            self._open = {}

    def _read_others(self) -> Iterator[Batch]:
        """The new frames, one segment's at a time."""
        listed = {
            path
            for worker, paths in list_segments(self._wal_dir).items()
            if worker != self._worker
            for path in paths
        }
        for path in listed - self._open.keys():
            try:
                self._open[path] = path.open("rb")
            except FileNotFoundError:
                continue  # flushed and deleted since the listing
        for path, f in list(self._open.items()):
            offset = f.tell()
            frames, used = decode_frames(f.read())
            f.seek(offset + used)  # a torn last frame is read again, whole, next time
            if path not in listed:  # deleted: nothing more will be written to it
                f.close()
                del self._open[path]
            for frame in frames:
                yield frame.metric, frame.rows, frame.first_seq


def _note(
    changes: Changes,
    watched: Container[tuple[str, str]],
    metric: str,
    rows: Rows,
    first_seq: int,
) -> None:
    # one set lookup per row: the cost of a reading nobody watches
    for i, user in enumerate(rows.user_id):
        key = (metric, user)
        if key in watched:
            reading = (rows.device_id[i], rows.ts[i], rows.value[i], first_seq + i)
            changes.setdefault(key, []).append(reading)
