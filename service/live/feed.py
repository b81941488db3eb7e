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
from array import array
from collections.abc import Container, Iterator
from pathlib import Path
from typing import BinaryIO

from service.schema import Rows
from service.storage.wal import decode_frames, list_segments

# (device_id, ts_ms, value, seq): one reading of a watched user
Reading = tuple[str, int, float, int]


class Readings:
    """A watched user's readings of one metric, held as columns: 28 bytes a reading, where
    a tuple of Python objects took ~170. Between two slow ticks of ``ops/soak`` a worker
    held up to 235,000 readings: as tuples ~40 MB in small objects, whose freed space the
    interpreter keeps."""

    __slots__ = ("_codes", "_devices", "device", "seq", "ts", "value")

    def __init__(self) -> None:
        self._devices: list[str] = []  # each device id once ...
        self._codes: dict[str, int] = {}
        self.device = array("I")  # ... and per reading its index in ``_devices``
        self.ts = array("q")
        self.value = array("d")
        self.seq = array("q")

    def append(self, device_id: str, ts: int, value: float, seq: int) -> None:
        code = self._codes.get(device_id)
        if code is None:
            code = self._codes[device_id] = len(self._devices)
            self._devices.append(device_id)
        self.device.append(code)
        self.ts.append(ts)
        self.value.append(value)
        self.seq.append(seq)

    def extend(self, other: Readings) -> None:
        for reading in other:
            self.append(*reading)

    def code(self, device_id: str | None) -> int | None:
        """The index of ``device_id`` in ``device`` (None: no reading of it); -1 for None
        (every device)."""
        return -1 if device_id is None else self._codes.get(device_id)

    def device_ids(self) -> list[str]:
        devices = self._devices
        return [devices[c] for c in self.device]

    def picked(self, device_id: str | None, lo: int) -> Readings:
        """The readings of ``device_id`` (None: any) stamped at ``lo`` or later."""
        out = Readings()
        code = self.code(device_id)
        if code is None:
            return out
        for i, ts in enumerate(self.ts):
            if ts >= lo and code in (-1, self.device[i]):
                out.append(self._devices[self.device[i]], ts, self.value[i], self.seq[i])
        return out

    def __len__(self) -> int:
        return len(self.ts)

    def __iter__(self) -> Iterator[Reading]:
        return zip(self.device_ids(), self.ts, self.value, self.seq, strict=True)


# (metric, user_id) -> its readings: the changes of a watched user
Changes = dict[tuple[str, str], Readings]


def note(changes: Changes, key: tuple[str, str], reading: Reading) -> None:
    """Add one reading of ``key`` to ``changes``."""
    held = changes.get(key)
    if held is None:
        held = changes[key] = Readings()
    held.append(*reading)


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
            note(changes, key, (rows.device_id[i], rows.ts[i], rows.value[i], first_seq + i))
