"""Sorted distinct user ids of immutable files: each file's (cached), and their union kept
as the set of files changes, for the user list (``users``).

A shared table's files (``TableUsers``) are followed per table version: the ids of the
files a version added are merged into the union; it is rebuilt from every file's ids
(from memory while they fit the budget) only when files leave holding a user no new file
holds (an erase's rewrite, retention). A compaction's output holds its inputs' users, so
it costs a read of the new file only. Removed files stay readable on the store until a
vacuum (a day at least), so the ids of a file that left are read even when not cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Container
from pathlib import Path

import polars as pl

from service.errors import Unavailable
from service.query.rollups import frame_bytes
from service.schema import ROW_SCHEMA
from service.storage.quarantine import READ_ERRORS
from service.storage.store import SharedTable


class FileUsers:
    """A least-recently-used cache of each file's sorted distinct user ids."""

    def __init__(
        self,
        directory: Path,
        budget_bytes: int,
        scan: Callable[[str], pl.LazyFrame] | None = None,
    ) -> None:
        """Files are ``directory``'s fragments, or whatever ``scan(name)`` reads."""
        self._scan = scan or (lambda name: pl.scan_parquet(directory / name, schema=ROW_SCHEMA))
        self._budget = budget_bytes
        self._files: OrderedDict[str, pl.Series] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def ids(self, name: str) -> pl.Series:
        """The sorted distinct user ids of file ``name``; raises what a failed read raises."""
        with self._lock:
            found = self._files.get(name)
            if found is not None:
                self._files.move_to_end(name)
                return found
        ids = self._scan(name).select(pl.col("user_id").unique().sort()).collect().to_series()
        size = frame_bytes(ids.to_frame())
        if size > self._budget:
            return ids
        with self._lock:
            if name not in self._files:
                self._files[name] = ids
                self._bytes += size
            while self._bytes > self._budget:
                _, old = self._files.popitem(last=False)
                self._bytes -= frame_bytes(old.to_frame())
        return ids

    def keep(self, listed: Container[str]) -> None:
        """Drop every cached file not in ``listed`` (compaction retires files by the
        hundred: kept, they would fill the budget with ids nobody asks for again)."""
        with self._lock:
            for name in [n for n in self._files if n not in listed]:
                self._bytes -= frame_bytes(self._files.pop(name).to_frame())


def any_missing(ids: list[pl.Series], among: list[pl.Series]) -> bool:
    """Whether some id of ``ids`` is in none of ``among``."""
    if not ids:
        return False
    if not among:
        return any(s.len() for s in ids)
    return bool((~pl.concat(ids).is_in(pl.concat(among).unique().implode())).any())


def merged(union: pl.Series | None, parts: list[pl.Series]) -> pl.Series:
    """The sorted distinct ids of ``union`` (sorted, distinct) and ``parts``."""
    if not parts:
        return union if union is not None else pl.Series("user_id", [], pl.String)
    new = pl.concat(parts).unique()
    if union is not None and union.len():
        # a vectorised binary search: the ids the union already holds cost no sort
        at = union.search_sorted(new, "left")
        known = (at < union.len()) & (union.gather(at.clip(0, union.len() - 1)) == new)
        new = new.filter(~known)
        if not new.len():
            return union
        new = pl.concat([union, new])
    return new.sort().rename("user_id")


class TableUsers:
    """The users of a shared table's files and the erased-rows check over them. Blocking."""

    def __init__(self, table: SharedTable, budget_bytes: int) -> None:
        self._table = table
        self._files = FileUsers(Path(), budget_bytes, lambda uri: table.scan([uri]))
        self._version = -1
        self._names: frozenset[str] = frozenset()
        self._union = pl.Series("user_id", [], pl.String)
        self._lock = threading.Lock()

    def union(self) -> pl.Series:
        """The sorted distinct ids of every file of the table's latest version."""
        try:
            with self._lock:
                version, uris = self._table.files(self._version)
                if uris is not None:
                    names = frozenset(uris)
                    self._union = self._updated(names)
                    self._names = names
                    self._files.keep(names)
                self._version = version
                return self._union
        except READ_ERRORS as exc:
            raise Unavailable(f"the shared table's users could not be read: {exc}") from exc

    def kept(self, user_id: str, erased_before: int) -> bool:
        """Whether a file of the version last seen holds a row of ``user_id`` that an erase
        with cut-off ``erased_before`` leaves (an ingest ``seq`` at or past it)."""
        with self._lock:
            names = sorted(self._names)
        try:
            holders = [u for u in names if bool((self._files.ids(u) == user_id).any())]
            if not holders:
                return False
            rows = self._table.scan(holders).filter(
                (pl.col("user_id") == user_id) & (pl.col("seq") >= erased_before)
            )
            return rows.head(1).collect().height > 0
        except READ_ERRORS as exc:
            raise Unavailable(f"the shared table's users could not be read: {exc}") from exc

    def _updated(self, names: frozenset[str]) -> pl.Series:
        plus = [self._files.ids(u) for u in sorted(names - self._names)]
        try:
            minus = [self._files.ids(u) for u in sorted(self._names - names)]
        except READ_ERRORS:  # vacuumed already: whether it held a last row is unknown
            minus = None
        if minus is None or any_missing(minus, plus):
            return merged(None, [self._files.ids(u) for u in sorted(names)])
        return merged(self._union, plus)
