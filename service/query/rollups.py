"""A per-worker cache of rollup files, which are small and never change once written.

A rollup file is immutable under its name (fragments are published without overwrite and
names are never reused), so a cached copy can never be stale; files that compaction
retires are simply no longer asked for and age out. The least recently used files are
dropped once the cache holds more than its byte budget.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import polars as pl

from service.catalog import ROLLUP_SCHEMA


class RollupCache:
    def __init__(self, directory: Path, budget_bytes: int) -> None:
        self._directory = directory
        self._budget = budget_bytes
        self._frames: OrderedDict[str, pl.DataFrame] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def user_rows(self, name: str, user_id: str) -> pl.DataFrame:
        """The rows of ``user_id`` in rollup file ``name`` (sorted by user: a slice)."""
        frame = self._frame(name)
        users = frame["user_id"]
        low = int(users.search_sorted(user_id, "left"))
        high = int(users.search_sorted(user_id, "right"))
        return frame.slice(low, high - low)

    def _frame(self, name: str) -> pl.DataFrame:
        with self._lock:
            frame = self._frames.get(name)
            if frame is not None:
                self._frames.move_to_end(name)
                return frame
        frame = pl.read_parquet(self._directory / name, schema=ROLLUP_SCHEMA)
        size = int(frame.estimated_size())
        if size > self._budget:
            return frame
        with self._lock:
            if name not in self._frames:
                self._frames[name] = frame
                self._bytes += size
            while self._bytes > self._budget:
                _, old = self._frames.popitem(last=False)
                self._bytes -= int(old.estimated_size())
        return frame
