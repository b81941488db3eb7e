"""Tombstones: erased users, as the manifest lists them, and the filter every reader applies.

A tombstone ``(user_id, before)`` erases every row of ``user_id`` whose ingest sequence
``seq`` is below ``before``. ``seq`` is a worker's ``time.time_ns()`` taken as a group
commit starts (raised past the worker's last one), and every worker of a machine reads the
same clock, so ``before``, read from that clock under the manifest lock, is above the
``seq`` of every reading already acknowledged anywhere and below that of every reading a
worker receives afterwards. Rows under a tombstone are invisible at once to every
reader (queries, the user list, flushes, recovery, compaction); ``erasure`` then removes
them from the files.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import polars as pl

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

KEEP_S = 600.0  # a done tombstone stays this long (see ``erasure``)


@dataclass(frozen=True, slots=True)
class Tombstone:
    user_id: str
    before: int  # ingest sequence (ns): the user's rows with a lower seq are erased
    at: float  # epoch s: when the erase began
    done: float | None = None  # epoch s: when no file held an erased row any more


def erased(tombstones: Iterable[Tombstone]) -> pl.Expr | None:
    """True for rows under one of ``tombstones``; None when there are none."""
    stones = list(tombstones)
    if not stones:
        return None
    before = pl.col("user_id").replace_strict(
        [t.user_id for t in stones], [t.before for t in stones], default=0, return_dtype=pl.Int64
    )
    return pl.col("seq") < before


def live(frame: Frame, tombstones: Iterable[Tombstone]) -> Frame:
    """``frame`` (``ROW_SCHEMA``) without the rows under ``tombstones``."""
    condition = erased(tombstones)
    return frame if condition is None else frame.filter(~condition)


def before(tombstones: Iterable[Tombstone], user_id: str) -> int:
    """The sequence below which ``user_id``'s rows are erased (0: none are)."""
    return max((t.before for t in tombstones if t.user_id == user_id), default=0)


def pending(tombstones: Iterable[Tombstone], keep_s: float = KEEP_S) -> bool:
    """Whether ``erasure.finish`` has work: a tombstone not done, or done ``keep_s`` ago."""
    now = time.time()
    return any(t.done is None or t.done + keep_s <= now for t in tombstones)
