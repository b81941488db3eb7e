"""The storage interface the rest of the service uses: one data directory.

Layout under the data root: ``manifest.json`` (+ ``.lock``), ``fragments/``, ``wal/``,
and ``quarantine/`` once a file could not be read (see ``quarantine``).
Everything that knows where files live is here or below; ``delta.DeltaStore`` publishes
to a shared Delta table instead of the manifest and reads it back through ``table_rows``.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

from service.config import Settings
from service.schema import ROW_SCHEMA
from service.storage.files import private_dir, tighten, unlink_quietly
from service.storage.fragments import FragmentInfo, fragment_name, write_fragment
from service.storage.manifest import Manifest, Snapshot
from service.storage.tombstones import Tombstone, live


@dataclass(frozen=True, slots=True)
class TableDay:
    """A compacted day of a shared table: its files and one user's per-minute rollup."""

    files: list[str]  # the day's files (URIs), each reading identity once
    rollup: pl.DataFrame  # ROLLUP_SCHEMA rows of the user


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit of a shared table, as a follower of its log sees it."""

    version: int
    foreign: bool  # another machine's flush made it (its rows never were in this one's WAL)
    added: tuple[tuple[str, str], ...]  # the files it added: (URI, metric)


class SharedTable(Protocol):
    """A follower of a shared table's log (``delta_log.TableLog``); blocking."""

    def files(self, known: int) -> tuple[int, list[str] | None]:
        """The table's latest version, and its files' URIs unless it is ``known``."""
        ...

    def commits(self, after: int | None) -> tuple[int, list[Commit]]:
        """The latest version, and the commits after version ``after`` (None: none)."""
        ...

    def scan(self, uris: list[str]) -> pl.LazyFrame:
        """The ``ROW_SCHEMA`` rows of the table's files ``uris``."""
        ...


class Store:
    def __init__(self, root: Path, worker: str, lock_timeout_s: float) -> None:
        self.root = root
        self.worker = worker
        self.wal_dir = root / "wal"
        self.fragment_dir = root / "fragments"
        self.manifest = Manifest(root / "manifest.json", lock_timeout_s)
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()

    def ensure_layout(self) -> None:
        """Create the layout; everything in it is private (``files.FILE_MODE``/``DIR_MODE``),
        including what an earlier version or an operator left readable."""
        for directory in (self.root, self.wal_dir, self.fragment_dir):
            private_dir(directory)
        tighten(self.root)

    def publish(
        self, frames: dict[str, pl.DataFrame], owner: str | None = None
    ) -> list[FragmentInfo]:
        """Write one fragment per non-empty metric frame and list them all in one commit;
        erased users' rows (see ``tombstones``) are left out. ``owner``, the worker whose
        WAL the rows come from, matters only to a shared table (see ``delta``)."""
        infos: list[FragmentInfo] = []
        erased = self.manifest.read().tombstones
        try:
            for metric, frame in frames.items():
                frame = live(frame, erased)
                if frame.height:
                    infos.append(self.write(frame, metric, 0))
            if infos:
                self.manifest.commit(add=infos)
        except BaseException:
            unlink_quietly([self.fragment_dir / info.name for info in infos])
            raise
        return infos

    def write(self, frame: pl.DataFrame, metric: str, level: int) -> FragmentInfo:
        """Write one fragment file, not yet listed in the manifest."""
        while True:
            name = self._next_name()
            if (self.fragment_dir / name).exists():
                continue  # another Store with this worker id wrote it
            try:
                return write_fragment(frame, self.fragment_dir, name, metric, level)
            except FileExistsError:
                continue

    def fragments(
        self, metric: str, start_ms: int, end_ms: int, user_id: str | None = None
    ) -> list[FragmentInfo]:
        """Listed fragments of ``metric`` that may hold rows in ``[start_ms, end_ms)``
        (of ``user_id``, when given)."""
        snapshot: Snapshot = self.manifest.read()
        return [
            f
            for f in snapshot.fragments
            if f.metric == metric
            and f.min_ts < end_ms
            and f.max_ts >= start_ms
            and (user_id is None or f.holds(user_id))
        ]

    def table_rows(
        self, metric: str, start_ms: int, end_ms: int, user_id: str | None = None
    ) -> pl.LazyFrame | None:
        """Rows published to a table outside the manifest (``delta``); none here."""
        return None

    def table_sources(
        self, metric: str, start_ms: int, end_ms: int, user_id: str
    ) -> tuple[pl.LazyFrame | None, list[TableDay]]:
        """``table_rows`` split: the rows of files without a rollup, and the compacted days
        with one (``delta_rollups``); none here."""
        return None, []

    def table_retained(
        self, metric: str, start_ms: int, end_ms: int, user_id: str
    ) -> tuple[int, pl.DataFrame] | None:
        """A shared table's rolled-up days past raw retention in ``[start_ms, end_ms)``:
        the end of the last (epoch ms) and ``user_id``'s ``ROLLUP_SCHEMA`` rows; none here
        (this store lists such days in its manifest: ``rollups``)."""
        return None

    def scan_table(self, uris: list[str]) -> pl.LazyFrame:
        """The ``ROW_SCHEMA`` rows of a shared table's files ``uris``; none here."""
        return pl.LazyFrame(schema=ROW_SCHEMA)  # no shared table: no rows

    def shared_table(self) -> SharedTable | None:
        """A new follower of the shared table's log (each user keeps its own); none here."""
        return None

    def share_erasure(self, tomb: Tombstone) -> None:
        """Make ``tomb`` known to every machine sharing the table (``delta``); nothing here."""

    def sync_erasures(self) -> None:
        """List the erasures other machines began in this machine's manifest (``delta``)."""

    def scrub_table(self, stones: tuple[Tombstone, ...]) -> tuple[int, int]:
        """Remove the rows under ``stones`` from a shared table; (rows, files rewritten)."""
        return 0, 0

    def rollups(
        self, metric: str, start_ms: int, end_ms: int, user_id: str | None = None
    ) -> list[FragmentInfo]:
        """Listed rollup-only days (raw readings past retention) of ``metric`` that may hold
        minutes in ``[start_ms, end_ms)`` (of ``user_id``, when given); each entry names its
        rollup file."""
        return [
            f
            for f in self.manifest.read().rollups
            if f.metric == metric
            and f.min_ts < end_ms
            and f.max_ts >= start_ms
            and (user_id is None or f.holds(user_id))
        ]

    def new_name(self) -> str:
        """A fragment name no file of this store has had."""
        while True:
            name = self._next_name()
            if not (self.fragment_dir / name).exists():
                return name

    def _next_name(self) -> str:
        with self._seq_lock:
            return fragment_name(self.worker, next(self._seq))


def open_store(settings: Settings, worker: str) -> Store:
    """The worker's store; deltalake is imported only where the Delta store is chosen."""
    if settings.store == "delta":
        from service.storage.delta import DeltaStore

        return DeltaStore(
            settings.data_dir,
            worker,
            settings.lock_timeout_s,
            settings.table_uri,
            settings.table_options,
        )
    return Store(settings.data_dir, worker, settings.lock_timeout_s)
