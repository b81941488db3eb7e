"""The user list: every user with a stored reading (any metric), in id order, a page at a time.

Ids sort by code point (the byte order of their UTF-8 text, as Polars sorts them), so an
integer id sent as ``10`` sorts before ``2``.

Listed files are immutable under their names, so each one's sorted distinct user ids are
read once per worker and kept (least recently used dropped past ``CACHE_BYTES``). Their
union is kept for the set of names it was built from and follows the manifest: the ids
of new files (a flush's, or a compaction's, which hold their inputs' users) are merged
in; it is rebuilt from every file's ids (from memory while they fit the budget) only
when files leave holding a user that no new file holds (retention, quarantine).
A page then costs binary searches in the union, plus one pass over the unflushed rows
(this worker's buffer and other workers' WAL tails, the Reader's own sources), which are
read before the manifest for the Reader's reason: a user moving from a buffer to a file
is seen in one place or the other.

On the Delta store the shared table's users are added, followed per table version
(``user_ids.TableUsers``): every machine's flushed users, with this machine's unflushed
ones read first as above.

The manifest's ``user_lo``/``user_hi`` bound only level-2 files and only by their range
partition; the union answers any ``after``/``prefix`` without them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import polars as pl

from service import metrics
from service.query.user_ids import FileUsers, TableUsers, any_missing, merged
from service.schema import METRICS, ROW_SCHEMA
from service.storage.fragments import FragmentInfo
from service.storage.quarantine import READ_ERRORS, isolate, unreadable
from service.storage.store import Store
from service.storage.tombstones import before

# per-file id sets kept per worker: ~1 M short ids; the union (one copy of every distinct
# id) is kept besides, outside this budget
CACHE_BYTES = 32 * 1024 * 1024
# passes of one request: each after quarantining a file that failed the previous one, or
# after the manifest changed under it (a file it listed retired and deleted meanwhile)
ATTEMPTS = 4

Unflushed = Callable[[str], list[pl.DataFrame]]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    after: str | None = None
    prefix: str | None = None


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[str]
    next: str | None  # the last user of the page when more users follow


class UserIndex:
    """Pages of the user list, for one worker. Blocking: run it in a thread."""

    def __init__(self, store: Store, unflushed: Unflushed, budget_bytes: int = CACHE_BYTES):
        self._store = store
        self._unflushed = unflushed
        self._files = FileUsers(store.fragment_dir, budget_bytes)
        shared = store.shared_table()
        self._table = None if shared is None else TableUsers(shared, budget_bytes)
        self._names: frozenset[str] = frozenset()
        self._union = pl.Series("user_id", [], pl.String)
        self._lock = threading.Lock()

    def page(self, q: Page) -> UserPage:
        """The first ``q.limit`` users after ``q.after`` that start with ``q.prefix``."""
        stones = self._store.manifest.read().tombstones
        # an erased user left in a file is skipped: the page takes that many more candidates
        wide = replace(q, limit=q.limit + len(stones))
        fresh = self._fresh(wide)  # before the manifest: see the module docstring
        candidates = set(fresh) | set(_window(self._settled(), wide))
        if self._table is not None:  # a shared table: every machine's users
            candidates |= set(_window(self._table.union(), wide))
        found = sorted(candidates)
        if stones:
            found = [user for user in found if not self._erased(user, before(stones, user))]
        found = found[: q.limit + 1]
        users = found[: q.limit]
        return UserPage(users, users[-1] if len(found) > q.limit else None)

    def _erased(self, user_id: str, erased_before: int) -> bool:
        """Whether an erase hid every row of ``user_id`` (none has a seq past the cut-off)."""
        if not erased_before:
            return False
        kept = (pl.col("user_id") == user_id) & (pl.col("seq") >= erased_before)
        for attempt in range(1, ATTEMPTS + 1):
            frames = [df.lazy() for metric in METRICS for df in self._unflushed(metric)]
            paths = [
                self._store.fragment_dir / f.name
                for f in self._store.manifest.read().fragments
                if f.holds(user_id)
            ]
            if paths:
                frames.append(pl.scan_parquet(paths, schema=ROW_SCHEMA))
            if self._table is not None and self._table.kept(user_id, erased_before):
                return False
            try:
                return not frames or pl.concat(frames).filter(kept).head(1).collect().height == 0
            except READ_ERRORS:
                if attempt == ATTEMPTS:  # the erasure's rewrite deletes files as it goes
                    raise
        raise AssertionError("unreachable")

    def _fresh(self, q: Page) -> list[str]:
        """The page's candidates among the unflushed rows of every metric."""
        frames = [df.select("user_id") for metric in METRICS for df in self._unflushed(metric)]
        if not frames:
            return []
        ids = pl.concat(frames).lazy()
        if q.after is not None:
            ids = ids.filter(pl.col("user_id") > q.after)
        if q.prefix is not None:
            ids = ids.filter(pl.col("user_id").str.starts_with(q.prefix))
        found = ids.unique().sort("user_id").head(q.limit + 1).collect(engine="in-memory")
        return found.to_series().to_list()

    def _settled(self) -> pl.Series:
        """The union of the listed files' user ids; an unreadable file is quarantined and
        the union built without it."""
        for attempt in range(1, ATTEMPTS + 1):
            snapshot = self._store.manifest.read()
            try:
                return self._union_of(snapshot.fragments)
            except _Unread as failed:
                if attempt == ATTEMPTS:
                    raise failed.error from None
                # only the day file is read here: its rollup companion is not to blame
                bad = unreadable(self._store, [replace(failed.file, rollup=False)])
                if bad:
                    metrics.QUARANTINED_FILES.inc(len(isolate(self._store, bad)))
                elif self._store.manifest.read().generation == snapshot.generation:
                    raise failed.error from None  # nothing to blame, nothing changed
        raise AssertionError("unreachable")

    def _union_of(self, files: Iterable[FragmentInfo]) -> pl.Series:
        by_name = {f.name: f for f in files}
        names = frozenset(by_name)
        with self._lock:
            if names != self._names:
                self._union = self._updated(by_name, names)
                self._names = names
                self._files.keep(names)
            return self._union

    def _updated(self, by_name: dict[str, FragmentInfo], names: frozenset[str]) -> pl.Series:
        """The union for ``names`` from the one for the last names: the new files' ids are
        merged in (a flush, or a compaction, whose output holds the users of its inputs);
        it is rebuilt from every file only when a file that left may have held a user's
        last rows (retention, quarantine) or cannot be read any more."""
        plus = self._read(by_name, names - self._names)
        minus = self._left(self._names - names)
        if minus is None or any_missing(minus, plus):
            return merged(None, self._read(by_name, names))
        return merged(self._union, plus)

    def _read(self, by_name: dict[str, FragmentInfo], names: Iterable[str]) -> list[pl.Series]:
        read = []
        for name in sorted(names):
            try:
                read.append(self._files.ids(name))
            except READ_ERRORS as exc:
                raise _Unread(by_name[name], exc) from exc
        return read

    def _left(self, names: Iterable[str]) -> list[pl.Series] | None:
        """The ids of files that left the manifest; None if one is gone (no longer listed,
        so not quarantined: retired files are deleted after their grace period)."""
        try:
            return [self._files.ids(name) for name in names]
        except READ_ERRORS:
            return None


class _Unread(Exception):
    """A listed file whose ids could not be read, and what its read raised."""

    def __init__(self, file: FragmentInfo, error: BaseException) -> None:
        super().__init__(file.name)
        self.file = file
        self.error = error


def _window(union: pl.Series, q: Page) -> list[str]:
    """The page's candidates in the sorted ``union``: ids after ``q.after`` that start with
    ``q.prefix`` are one contiguous run."""
    start = 0
    if q.after is not None:
        start = int(union.search_sorted(q.after, "right"))
    if q.prefix is not None:
        start = max(start, int(union.search_sorted(q.prefix, "left")))
    window = union.slice(start, q.limit + 1)
    if q.prefix is not None:
        window = window.filter(window.str.starts_with(q.prefix))
    return window.to_list()
