"""Append-only rows kept as a few immutable frames, for readers that keep what they derive
from a frame (see ``query.minutes.UserSpans``).

Each append adds a frame; a frame merges into the one before it while that one holds at
most twice its rows, so n rows lie in O(log n) frames and each row is copied O(log n)
times. A frame never changes once made: the big old frames stay the same objects while
small new ones arrive, so a reader derives from each new row a few times, not on every
read of the growing whole.
"""

from __future__ import annotations

import polars as pl


class Tiers:
    __slots__ = ("frames", "rows")

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []  # replaced, never changed: readers may hold it
        self.rows = 0

    def append(self, frame: pl.DataFrame) -> None:
        frames = [*self.frames, frame]
        while len(frames) > 1 and frames[-2].height <= 2 * frames[-1].height:
            last = frames.pop()
            frames[-1] = pl.concat([frames[-1], last], rechunk=True)
        self.frames = frames
        self.rows += frame.height

    def whole(self) -> pl.DataFrame | None:
        """Every row as one frame (None before the first append)."""
        if not self.frames:
            return None
        return self.frames[0] if len(self.frames) == 1 else pl.concat(self.frames)
