"""The manifest: the catalogue of published fragments.

File: ``manifest.json`` beside ``manifest.json.lock``. Content:
``{"version": 1, "generation": n,
   "fragments": [{"name", "metric", "rows", "min_ts", "max_ts", "level", "rollup",
                  "user_lo", "user_hi", "spans"}, ...],
   "retired": [{"name", "at"}, ...],
   "rollups": [{"name", "metric", "rows", "min_ts", "max_ts", "level", "rollup",
                "user_lo", "user_hi", "spans"}, ...],
   "tombstones": [{"user_id", "before", "at", "done"}, ...]}``
with times in epoch ms (inclusive) and ``at`` in epoch seconds. ``level`` is 0 for a
flushed fragment and grows with each compaction that rewrote its rows; ``rollup`` says a
per-minute rollup file accompanies the entry (retired with it), ``spans`` likewise a spans
file of a level-1 entry (see ``fragments``); ``user_lo``/``user_hi`` bound the user ids of
a level-2 file (null: unbounded). A tombstone erases a user's rows with ``seq`` below
``before`` (see ``tombstones``); ``at`` and ``done`` (null until no file holds such a row)
are epoch seconds. Retired files are no longer read by new queries; they are deleted after
a grace period so that queries already running never lose a file under them.

``rollups`` lists the days whose raw readings retention dropped (see ``retention``): each
entry is the level-2 entry it was, named by its rollup file (``<frag>.rollup.parquet``, the
only file it owns: ``rollup`` is false). Nothing that reads raw rows sees these entries.

Every change takes the file lock (a fresh lock object per call, acquired with a
timeout), reads the current file, writes the new one under a temporary name, fsyncs it
and renames it over the old one, so a reader without the lock always sees a whole
manifest, old or new.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import msgspec
from filelock import Timeout

from service.errors import ManifestBusy
from service.storage.files import private_lock, replace_atomically, write_private
from service.storage.fragments import FragmentInfo, rollup_name
from service.storage.tombstones import Tombstone

VERSION = 1


class _Entry(msgspec.Struct):
    name: str
    metric: str
    rows: int
    min_ts: int
    max_ts: int
    level: int = 0
    rollup: bool = False
    user_lo: str | None = None
    user_hi: str | None = None
    spans: bool = False


class _Retired(msgspec.Struct):
    name: str
    at: float


class _Tombstone(msgspec.Struct):
    user_id: str
    before: int
    at: float
    done: float | None = None


class _Document(msgspec.Struct):
    version: int
    generation: int
    fragments: list[_Entry]
    retired: list[_Retired] = []
    rollups: list[_Entry] = []
    tombstones: list[_Tombstone] = []


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    fragments: tuple[FragmentInfo, ...]
    retired: tuple[tuple[str, float], ...] = ()
    rollups: tuple[FragmentInfo, ...] = ()  # rolled-up days without their raw files
    tombstones: tuple[Tombstone, ...] = ()

    def listed(self) -> set[str]:
        """The name of every file an entry owns (retired files not included)."""
        return {name for f in (*self.fragments, *self.rollups) for name in f.files}


# decides, under the lock and from the current manifest, the tombstones of the new one
Tombstoner = Callable[[Snapshot], tuple[Tombstone, ...]]

EMPTY = Snapshot(0, ())

# flock excludes other open files of this process too, but one in-process lock keeps
# threads of one worker from polling against each other
_local_lock = threading.Lock()


class Manifest:
    def __init__(self, path: Path, lock_timeout_s: float) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._timeout = lock_timeout_s
        self._cached: tuple[tuple[int, int, int], Snapshot] | None = None
        self._cache_lock = threading.Lock()

    def read(self) -> Snapshot:
        """The current manifest; re-parsed only when the file was replaced."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return EMPTY
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._cache_lock:
            if self._cached is not None and self._cached[0] == key:
                return self._cached[1]
        snapshot = _parse(self.path.read_bytes())
        with self._cache_lock:
            self._cached = (key, snapshot)
        return snapshot

    def commit(
        self,
        add: Iterable[FragmentInfo] = (),
        remove: Iterable[str] = (),
        *,
        retire: bool = False,
        forget: Iterable[str] = (),
        unroll: Iterable[str] = (),
        tombstones: Tombstoner = lambda current: current.tombstones,
    ) -> Snapshot:
        """Add and remove entries in one atomic change under the manifest lock.

        With ``retire`` the removed files are remembered as retired (for deletion after a
        grace period); ``forget`` drops names from the retired list; the entries named in
        ``unroll`` stay, without their rollup (decided under the lock: an entry retired
        meanwhile must not come back); ``tombstones`` makes the new tombstones from the old.
        """
        add, gone, forgotten, unrolled = list(add), set(remove), set(forget), set(unroll)
        lock = private_lock(self._lock_path)
        try:
            with _local_lock, lock.acquire(timeout=self._timeout):
                current = _parse(self.path.read_bytes()) if self.path.exists() else EMPTY
                known = {f.name for f in current.fragments}
                kept = [
                    replace(f, rollup=False) if f.name in unrolled else f
                    for f in current.fragments
                    if f.name not in gone
                ]
                retired = [r for r in current.retired if r[0] not in forgotten]
                if retire:
                    now = time.time()
                    retired += [
                        (name, now) for f in current.fragments if f.name in gone for name in f.files
                    ]
                fragments = (*kept, *(f for f in add if f.name not in known))
                new = Snapshot(current.generation + 1, fragments, tuple(retired), current.rollups)
                return self._write(replace(new, tombstones=tombstones(current)))
        except Timeout as exc:
            raise ManifestBusy(f"manifest lock not acquired in {self._timeout}s") from exc

    def expire(
        self, demote: Iterable[str], drop: Iterable[str], drop_rollups: Iterable[str]
    ) -> Snapshot:
        """Retention's one change: each entry in ``demote`` that has a rollup moves to
        ``rollups`` and its raw file is retired; entries in ``drop`` (and in ``demote``
        without a rollup) and the rollups in ``drop_rollups`` are retired whole. Names no
        longer listed are skipped (decided under the lock)."""
        demoted, dropped, gone = set(demote), set(drop), set(drop_rollups)

        def update(current: Snapshot) -> Snapshot:
            now = time.time()
            kept, moved, retired = [], [], list(current.retired)
            for f in current.fragments:
                if f.name in demoted and f.rollup:
                    moved.append(replace(f, name=rollup_name(f.name), rollup=False))
                    retired.append((f.name, now))
                elif f.name in demoted or f.name in dropped:
                    retired += [(name, now) for name in f.files]
                else:
                    kept.append(f)
            rollups = [r for r in current.rollups if r.name not in gone]
            retired += [(r.name, now) for r in current.rollups if r.name in gone]
            return Snapshot(0, tuple(kept), tuple(retired), (*rollups, *moved))

        return self._change(update)

    def swap_rollups(self, swaps: dict[str, FragmentInfo]) -> Snapshot:
        """Each rollup-list entry named in ``swaps`` is replaced by its new entry and its
        file retired (names no longer listed are skipped, decided under the lock)."""

        def update(current: Snapshot) -> Snapshot:
            now, retired = time.time(), list(current.retired)
            rollups = []
            for r in current.rollups:
                new = swaps.get(r.name)
                if new is not None:
                    retired.append((r.name, now))
                rollups.append(r if new is None else new)
            return Snapshot(0, current.fragments, tuple(retired), tuple(rollups))

        return self._change(update)

    def restore(self, fragments: Iterable[FragmentInfo], rollups: Iterable[FragmentInfo]) -> None:
        """List exactly these entries, nothing retired (a backup's new manifest)."""
        self._change(lambda _: Snapshot(0, tuple(fragments), (), tuple(rollups)))

    def _change(self, update: Callable[[Snapshot], Snapshot]) -> Snapshot:
        """Write ``update(current)`` as the next generation, under the lock."""
        lock = private_lock(self._lock_path)
        try:
            with _local_lock, lock.acquire(timeout=self._timeout):
                current = _parse(self.path.read_bytes()) if self.path.exists() else EMPTY
                new = replace(
                    update(current),
                    generation=current.generation + 1,
                    tombstones=current.tombstones,  # only ``commit`` changes them
                )
                return self._write(new)
        except Timeout as exc:
            raise ManifestBusy(f"manifest lock not acquired in {self._timeout}s") from exc

    def _write(self, snapshot: Snapshot) -> Snapshot:
        doc = _Document(
            VERSION,
            snapshot.generation,
            [_Entry(**asdict(f)) for f in snapshot.fragments],
            [_Retired(name, at) for name, at in snapshot.retired],
            [_Entry(**asdict(f)) for f in snapshot.rollups],
            [_Tombstone(**asdict(t)) for t in snapshot.tombstones],
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        write_private(tmp, msgspec.json.encode(doc))
        replace_atomically(tmp, self.path)
        return snapshot


def _parse(data: bytes) -> Snapshot:
    doc = msgspec.json.decode(data, type=_Document)
    if doc.version != VERSION:
        raise ValueError(f"manifest version {doc.version} is not {VERSION}")
    return Snapshot(
        doc.generation,
        tuple(_info(e) for e in doc.fragments),
        tuple((r.name, r.at) for r in doc.retired),
        tuple(_info(e) for e in doc.rollups),
        tuple(Tombstone(t.user_id, t.before, t.at, t.done) for t in doc.tombstones),
    )


def _info(e: _Entry) -> FragmentInfo:
    return FragmentInfo(
        e.name,
        e.metric,
        e.rows,
        e.min_ts,
        e.max_ts,
        e.level,
        e.rollup,
        e.user_lo,
        e.user_hi,
        e.spans,
    )
