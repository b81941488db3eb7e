"""Per-worker write-ahead log: append-only segments of checksummed frames.

Files: ``wal/wal-<worker>-<segment:012d>.log``, written only by the worker named in
the file, which holds ``wal/<worker>.lock`` (an flock, released by the kernel when the
process dies) for as long as it lives. A segment is deleted only after every row in it
is in a fragment listed in the manifest.

Frame: a 12-byte header ``b"HW"``, version ``1``, one pad byte, payload length (u32 LE),
CRC-32 of the payload (u32 LE); then the payload, msgpack of
``{"m": metric, "s": first_seq, "u": [user_id], "d": [device_id], "t": [ts_ms], "v": [value]}``
where row ``i`` has ingest sequence ``first_seq + i``. A reader stops at the first frame
that is short or fails its checksum: that is a torn write, never acknowledged.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl

from service.schema import Rows, rows_frame
from service.storage.files import fsync_dir, open_private, private_lock, unlink_quietly
from service.tiers import Tiers

_HEADER = struct.Struct("<2sBxII")
_MAGIC = b"HW"
_VERSION = 1
_SEGMENT_RE = re.compile(r"^wal-(?P<worker>[A-Za-z0-9]+)-(?P<segment>\d{12})\.log$")


class _Payload(msgspec.Struct):
    m: str
    s: int
    u: list[str]
    d: list[str]
    t: list[int]
    v: list[float]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Payload)


@dataclass(frozen=True, slots=True)
class Frame:
    metric: str
    first_seq: int
    rows: Rows


def encode_frame(metric: str, first_seq: int, rows: Rows) -> bytes:
    payload = _encoder.encode(
        _Payload(metric, first_seq, rows.user_id, rows.device_id, rows.ts, rows.value)
    )
    return _HEADER.pack(_MAGIC, _VERSION, len(payload), zlib.crc32(payload)) + payload


def decode_frames(data: bytes | memoryview) -> tuple[list[Frame], int]:
    """Decode whole frames from the start of ``data``; return them and the bytes used."""
    frames: list[Frame] = []
    view = memoryview(data)
    offset = 0
    while offset + _HEADER.size <= len(view):
        magic, version, length, crc = _HEADER.unpack_from(view, offset)
        end = offset + _HEADER.size + length
        if magic != _MAGIC or version != _VERSION or end > len(view):
            break
        payload = view[offset + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        try:
            p = _decoder.decode(payload)
        except msgspec.DecodeError:
            break
        frames.append(Frame(p.m, p.s, Rows(p.u, p.d, p.t, p.v)))
        offset = end
    return frames, offset


def segment_path(wal_dir: Path, worker: str, segment: int) -> Path:
    return wal_dir / f"wal-{worker}-{segment:012d}.log"


def lock_path(wal_dir: Path, worker: str) -> Path:
    return wal_dir / f"{worker}.lock"


def list_segments(wal_dir: Path) -> dict[str, list[Path]]:
    """Every worker's segments, oldest first."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for entry in os.scandir(wal_dir):
        match = _SEGMENT_RE.match(entry.name)
        if match:
            found.setdefault(match["worker"], []).append((int(match["segment"]), Path(entry.path)))
    return {worker: [p for _, p in sorted(items)] for worker, items in found.items()}


def read_segment(path: Path) -> list[Frame]:
    """All complete frames of a segment; a missing file reads as empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return decode_frames(data)[0]


class SegmentWriter:
    """One open segment; appends are plain ``write`` calls, made durable by ``sync``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        self.size = 0

    def append(self, data: bytes) -> None:
        """Write ``data`` whole or not at all (a failed write is cut off again)."""
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(data)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class OwnedLog:
    """This worker's WAL: its owner lock and its current segment."""

    def __init__(self, wal_dir: Path, worker: str) -> None:
        self._wal_dir, self._worker = wal_dir, worker
        self._lock = private_lock(lock_path(wal_dir, worker))
        self._lock.acquire(timeout=5)
        self._segment_no = 0
        self.current = self._open_next()
        self.sealed: list[Path] = []

    def _open_next(self) -> SegmentWriter:
        self._segment_no += 1
        writer = SegmentWriter(segment_path(self._wal_dir, self._worker, self._segment_no))
        fsync_dir(self._wal_dir)
        return writer

    def rotate(self) -> None:
        """Seal the current segment (if it holds anything) and start a new one."""
        if self.current.size == 0:
            return
        old = self.current
        self.current = self._open_next()
        old.close()
        self.sealed.append(old.path)

    def drop_sealed(self) -> None:
        """Delete sealed segments: their rows are in the manifest now."""
        sealed, self.sealed = self.sealed, []
        unlink_quietly(sealed)

    def close(self, *, delete: bool) -> None:
        """Close the log; with ``delete`` its files go too (everything is flushed)."""
        self.current.close()
        if delete:
            unlink_quietly([*self.sealed, self.current.path])
        self._lock.release()
        if delete:
            lock_path(self._wal_dir, self._worker).unlink(missing_ok=True)


def to_frame(frames: list[Frame], metric: str) -> pl.DataFrame:
    """The rows of ``metric`` in ``frames`` as one frame of ``ROW_SCHEMA``."""
    rows, seq = Rows(), list[int]()
    for frame in frames:
        if frame.metric == metric:
            rows.extend(frame.rows)
            seq.extend(range(frame.first_seq, frame.first_seq + len(frame.rows)))
    return rows_frame(rows, seq)


class TailReader:
    """Reads other workers' segments incrementally: each file is append-only, so only
    the bytes past what was already decoded need reading on the next call. Each file's
    rows are kept as ``Tiers``: its old rows stay in the same frames as new ones arrive."""

    def __init__(self, metric: str) -> None:
        self._metric = metric
        self._cache: dict[Path, tuple[int, Tiers]] = {}
        self._lock = threading.Lock()

    def read(self, paths: list[Path]) -> list[pl.DataFrame]:
        with self._lock:
            wanted = set(paths)
            for gone in [p for p in self._cache if p not in wanted]:
                del self._cache[gone]
            return [frame for path in paths for frame in self._read_one(path)]

    def _read_one(self, path: Path) -> list[pl.DataFrame]:
        offset, tiers = self._cache.get(path, (0, Tiers()))
        try:
            with path.open("rb") as f:
                f.seek(offset)
                frames, used = decode_frames(f.read())
        except FileNotFoundError:
            self._cache.pop(path, None)
            return []
        if frames:
            new = to_frame(frames, self._metric)
            if new.height:
                tiers.append(new)
        self._cache[path] = (offset + used, tiers)
        return tiers.frames
