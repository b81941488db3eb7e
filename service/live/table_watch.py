"""The shared table's part of the change feed: readings other machines flushed, for streams.

On the Delta store a reading acknowledged by another machine reaches this one only through
the table. While any stream is open the hub asks, at most every ``CHECK_S``, for the
table's commits after the last version seen (``SharedTable.commits``: on S3 one listing
of the log when nothing changed). Of each foreign commit (another machine's flush; this
machine's own rows came through its WAL) it reads the added files of watched metrics and
keeps the rows of watched (metric, user) pairs, as the WAL feed does. Compaction, erasure
and retention commits carry no app transaction and add no reading: they are skipped.
A failed look is retried from the same version; ``resume`` starts from the latest one.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import polars as pl

from service.live.feed import Changes, note
from service.storage.store import Commit, SharedTable

CHECK_S = 1.0  # a cross-machine reading is visible after its machine's flush anyway


class TableWatch:
    def __init__(self, table: SharedTable | None, check_s: float = CHECK_S) -> None:
        self._table = table
        self._check_s = check_s
        self._version: int | None = None  # the last version seen; None: from the latest
        self._due = 0.0  # monotonic s

    def resume(self) -> None:
        """Follow from the table's latest version (blocking): a stream opened now gets
        earlier readings from its snapshot."""
        self._version = None
        if self._table is not None:
            self._version = self._table.commits(None)[0]

    def back_off(self, delay_s: float) -> None:
        self._due = time.monotonic() + delay_s

    def collect(self, watched: Collection[tuple[str, str]]) -> Changes | None:
        """The readings of ``watched`` pairs in the foreign commits since the last look;
        None without a look (no table, or the last look is under ``check_s`` old or failed
        within its back-off). Blocking."""
        if self._table is None or time.monotonic() < self._due:
            return None
        self._due = time.monotonic() + self._check_s
        version, commits = self._table.commits(self._version)
        changes: Changes = {}
        if self._version is not None:
            files: dict[str, list[str]] = {}
            for commit in commits:
                for uri, metric in _added(commit):
                    files.setdefault(metric, []).append(uri)
            for metric, uris in files.items():
                users = sorted({user for m, user in watched if m == metric})
                if users:
                    self._read(changes, metric, uris, users)
        self._version = version
        return changes

    def _read(self, changes: Changes, metric: str, uris: list[str], users: list[str]) -> None:
        assert self._table is not None
        rows = (
            self._table.scan(uris)
            .filter(pl.col("user_id").is_in(users))
            .select("user_id", "device_id", pl.col("ts").dt.epoch("ms"), "value", "seq")
            .collect()
        )
        for user, device, ts, value, seq in rows.iter_rows():
            note(changes, (metric, user), (device, ts, value, seq))


def _added(commit: Commit) -> tuple[tuple[str, str], ...]:
    """The files of ``commit`` that bring readings this machine has not seen."""
    return commit.added if commit.foreign else ()
