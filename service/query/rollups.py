"""A per-worker cache of small frames derived from files that never change once written:
rollup files, the per-minute partials of not-yet-compacted fragments, and query answers
computed from such files alone.

A file is immutable under its name (fragments are written without overwrite and
names are never reused), so a cached copy can never be stale. Files that compaction
retires are dropped once the manifest no longer lists them (a busy day's rollup is
rewritten several times), and the least recently used files once the cache holds more
than its byte budget.
"""

from __future__ import annotations

import sys
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Container, Hashable, Sequence
from pathlib import Path

import polars as pl

from service.schema import ROLLUP_SCHEMA

# what a frame holds beyond ``estimated_size`` (measured with Polars 2.1 over thousands of
# frames such as the caches keep, in a fresh process): ~730 bytes per column however few
# rows (buffers, arrays and their headers); a 1-row partial of 9 columns takes ~6.6 KB, not
# the 62 bytes it estimates. (Frames of up to ~10,000 rows also hold up to half their data
# again in allocation slack. Counting it made ops/bench's uncompacted store overflow the
# loose-partials cache, a query run taking ~100 s instead of ~10 s: it is left out.)
_COLUMN_BYTES = 768


def frame_bytes(frame: pl.DataFrame) -> int:
    """The memory ``frame`` keeps alive, as the caches count it against their budgets."""
    return int(frame.estimated_size()) + _COLUMN_BYTES * frame.width


class ByUser:
    """A frame sorted by ``user_id``, with where each user's rows start and how many there are.

    The index is the users in order and two arrays: no Python object per user and file
    but the user's string, and that is interned, so a user listed by many cached files is
    one string. (A dict of ``(start, count)`` tuples took ~240 bytes per user and file, more
    than the partials themselves for a fragment of a few hundred users.)"""

    __slots__ = ("counts", "frame", "size", "starts", "users")

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame
        runs = (
            frame.select("user_id")
            .with_row_index("start")
            .group_by("user_id")
            .agg(pl.col("start").min(), pl.len())
        )
        found = sorted(zip(runs["user_id"], runs["start"], runs["len"], strict=True))
        self.users: list[str] = [sys.intern(user) for user, _, _ in found]
        self.starts = array("q", [start for _, start, _ in found])
        self.counts = array("q", [count for _, _, count in found])
        # each string counted in full, though a user in several files shares it
        index = sum(map(sys.getsizeof, (self.users, self.starts, self.counts)))
        self.size = frame_bytes(frame) + index + sum(map(sys.getsizeof, self.users))

    def span(self, user_id: str) -> tuple[int, int]:
        """Where the user's rows start, and how many there are (none: ``(0, 0)``)."""
        i = bisect_left(self.users, user_id)
        if i < len(self.users) and self.users[i] == user_id:
            return self.starts[i], self.counts[i]
        return 0, 0

    def user_rows(self, user_id: str, *, copy: bool = False) -> pl.DataFrame:
        """The user's rows: a slice, which keeps the whole frame alive, or a ``copy``."""
        start, count = self.span(user_id)
        if not copy:
            return self.frame.slice(start, count)
        return self.frame[range(start, start + count)] if count else self.frame.clear()


def read_rollup(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path, schema=ROLLUP_SCHEMA)


class RollupCache:
    """``read(path)`` makes a file's frame, sorted by ``user_id``; by default the rollup itself."""

    def __init__(
        self,
        directory: Path,
        budget_bytes: int,
        read: Callable[[Path], pl.DataFrame] = read_rollup,
    ) -> None:
        self._directory = directory
        self._budget = budget_bytes
        self._read = read
        self._files: OrderedDict[str, ByUser] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def user_rows(self, name: str, user_id: str) -> pl.DataFrame:
        """The rows of ``user_id`` in the frame of file ``name`` (sorted by user)."""
        return self.files_rows([name], user_id)[0]

    def files_rows(self, names: Sequence[str], user_id: str) -> list[pl.DataFrame]:
        """The rows of ``user_id`` in the frame of each file of ``names``: one query's files.

        A file of the query never pushes another of its files out. When they do not all
        fit, those kept stay and the rest are read for this query alone, so the next query
        over the same files reads only the rest; evicting the least recently used would
        read every file each time (each pushing out the one needed next).

        A file read now gives a copy of the user's rows: a slice keeps the file's whole
        frame alive until the query ends (~110 KB for each fragment's partials under
        ``ops/soak``, hundreds of fragments a query). A file found here gives a slice:
        what those keep alive is bounded by the budget."""
        protected = set(names)
        found = []
        for name in names:
            loaded, kept = self._load(name, protected)
            found.append(loaded.user_rows(user_id, copy=not kept))
        return found

    def _load(self, name: str, protected: Container[str]) -> tuple[ByUser, bool]:
        """The file's frame, and whether it was already here; kept if room can be made
        without evicting a ``protected`` file."""
        with self._lock:
            loaded = self._files.get(name)
            if loaded is not None:
                self._files.move_to_end(name)
                return loaded, True
        loaded = ByUser(self._read(self._directory / name))
        with self._lock:
            if name not in self._files and self._make_room(loaded.size, protected):
                self._files[name] = loaded
                self._bytes += loaded.size
        return loaded, False

    def _make_room(self, size: int, protected: Container[str]) -> bool:
        """Evict the least recently used files outside ``protected`` until ``size`` more
        bytes fit the budget; False, evicting nothing, if they cannot. Holds the lock."""
        excess = self._bytes + size - self._budget
        victims = []
        for name, kept in self._files.items():  # least recently used first
            if excess <= 0:
                break
            if name not in protected:
                victims.append(name)
                excess -= kept.size
        if excess > 0:
            return False
        for name in victims:
            self._bytes -= self._files.pop(name).size
        return True

    def keep(self, listed: Container[str]) -> None:
        """Drop every cached file not in ``listed`` (the manifest's files)."""
        with self._lock:
            for name in [n for n in self._files if n not in listed]:
                self._bytes -= self._files.pop(name).size


Answer = tuple[pl.DataFrame, ...]


class FileAnswers:
    """Frames a query derived from immutable files (and from unflushed rows named by serial
    numbers that never repeat), each under a key that names all it was derived from: kept
    until one of its files leaves the manifest, or the least recently used once they hold
    more than ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._answers: OrderedDict[Hashable, tuple[Answer, list[str], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Answer | None:
        with self._lock:
            kept = self._answers.get(key)
            if kept is None:
                return None
            self._answers.move_to_end(key)
            return kept[0]

    def put(self, key: Hashable, answer: Answer, files: list[str]) -> None:
        """Keep ``answer``, derived from ``files`` alone."""
        size = sum(map(frame_bytes, answer))
        if size > self._budget:
            return
        with self._lock:
            if key in self._answers:
                return
            self._answers[key] = (answer, files, size)
            self._bytes += size
            while self._bytes > self._budget:
                _, (_, _, old) = self._answers.popitem(last=False)
                self._bytes -= old

    def keep(self, listed: Container[str]) -> None:
        """Drop every answer derived from a file not in ``listed``."""
        with self._lock:
            for key in [
                k
                for k, (_, files, _) in self._answers.items()
                if not all(f in listed for f in files)
            ]:
                self._bytes -= self._answers.pop(key)[2]
