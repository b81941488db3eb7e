"""Per-worker in-memory rows that are in the WAL but not yet in a fragment; no I/O.

Two generations per metric: ``active`` takes new rows; ``flushing`` holds the rows of
the flush in progress, so they stay visible to queries until their fragment is listed
in the manifest (``end_flush``). A failed flush leaves them in ``flushing`` and the next
``begin_flush`` merges the newer rows in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from service.schema import Rows, rows_frame
from service.tiers import Tiers

# rows converted to a frame as soon as this many are waiting, by the ``add`` that makes
# them so (on the event loop, ~1 ms): converting a whole flush (25,000 rows) in the flush's
# thread held the GIL for 15-50 ms under load, and every request waited that long
CONVERT_ROWS = 8_192


@dataclass(slots=True)
class _Columns:
    # the rows not converted yet, and their sequence numbers; once converted, a row's
    # Python objects go (a generation holds up to ``flush_rows`` rows twice otherwise)
    pending: Rows = field(default_factory=Rows)
    seq: list[int] = field(default_factory=list)
    # the rows converted so far, as frames: each row is converted once, however many
    # queries read the buffer (rebuilding 25,000 rows cost a query ~10 ms of GIL)
    tiers: Tiers = field(default_factory=Tiers)

    def extend(self, rows: Rows, first_seq: int) -> None:
        self.pending.extend(rows)
        self.seq.extend(range(first_seq, first_seq + len(rows)))
        if len(self.seq) >= CONVERT_ROWS:
            self.frames()

    def frames(self) -> list[pl.DataFrame]:
        """Every row, as the few immutable frames of ``Tiers``."""
        if self.seq:
            self.tiers.append(rows_frame(self.pending, self.seq))
            self.pending, self.seq = Rows(), []
        return self.tiers.frames

    def frame(self) -> pl.DataFrame:
        """Every row, as one frame."""
        self.frames()
        whole = self.tiers.whole()
        assert whole is not None  # a generation is made by its first rows
        return whole


class Buffer:
    def __init__(self) -> None:
        self._active: dict[str, _Columns] = {}
        # the flushing generation: per metric, the frame built so far and sealed columns
        self._flushing: dict[str, pl.DataFrame | None] = {}
        self._sealed: dict[str, list[_Columns]] = {}
        self._active_rows = 0
        self._flushing_rows = 0
        self._oldest: float | None = None
        self._lock = threading.Lock()
        # told of every row added (metric, rows, first seq): the stream watcher's feed
        self.on_add: Callable[[str, Rows, int], None] | None = None

    @property
    def active_rows(self) -> int:
        return self._active_rows

    @property
    def flushing_rows(self) -> int:
        return self._flushing_rows

    @property
    def rows(self) -> int:
        return self._active_rows + self._flushing_rows

    def oldest_age_s(self) -> float:
        """Seconds since the oldest row still waiting for a flush was added."""
        oldest = self._oldest
        return 0.0 if oldest is None else time.monotonic() - oldest

    def add(self, metric: str, rows: Rows, first_seq: int) -> None:
        with self._lock:
            self._active.setdefault(metric, _Columns()).extend(rows, first_seq)
            self._active_rows += len(rows)
            if self._oldest is None:
                self._oldest = time.monotonic()
        if self.on_add is not None:
            self.on_add(metric, rows, first_seq)

    def snapshot(self, metric: str) -> list[pl.DataFrame]:
        """Every unflushed row of ``metric``: the flushing generation and the active one."""
        with self._lock:
            active = self._active.get(metric)
            frames = [self._flushing_frame(metric)] if metric in self._flushing else []
            if active is not None:
                frames += active.frames()
            return frames

    def begin_flush(self) -> None:
        """Move the active rows into the flushing generation (cheap: no frame is built)."""
        with self._lock:
            for metric, cols in self._active.items():
                self._sealed.setdefault(metric, []).append(cols)
                self._flushing.setdefault(metric, None)
            self._flushing_rows += self._active_rows
            self._active, self._active_rows = {}, 0

    def flushing_frames(self) -> dict[str, pl.DataFrame]:
        """The flushing generation, one frame per metric (built here, off the event loop)."""
        with self._lock:
            return {metric: self._flushing_frame(metric) for metric in self._flushing}

    def _flushing_frame(self, metric: str) -> pl.DataFrame:
        frames = [] if (built := self._flushing[metric]) is None else [built]
        frames += [cols.frame() for cols in self._sealed.pop(metric, [])]
        frame = frames[0] if len(frames) == 1 else pl.concat(frames)
        self._flushing[metric] = frame
        return frame

    def end_flush(self) -> None:
        """The flushing rows are in the manifest now: forget them."""
        with self._lock:
            self._flushing, self._sealed, self._flushing_rows = {}, {}, 0
            self._oldest = time.monotonic() if self._active_rows else None
