"""Per-minute partials with the timestamps they span: what lets a 1-minute-slot query add
up its sources' minutes instead of de-duplicating their raw rows.

Each source of a query (a compacted day's rollup, a not-yet-compacted fragment, the
unflushed rows) gives per (minute, device) its partials (see ``partials``), ``lo`` and
``hi``, the first and last timestamp (epoch ms) they cover, and ``clean``: no reading
identity occurs twice among them. Two sources' partials of one (minute, device) add up
exactly when their spans do not meet, since one identity is one timestamp; a rollup keeps
no timestamps, so its span is its whole minute and it meets every other source there.
Every minute where a source is not clean or two spans meet is ``dirty``: the query reads
its raw rows and de-duplicates them, as the plain path does for every minute.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Hashable, Mapping
from pathlib import Path

import polars as pl

from service.partials import SPANNED, SPANS_SCHEMA, file_partials, spanned
from service.query.aggregate import PLAIN, SMALL
from service.query.rollups import frame_bytes
from service.query.sources import Query, Sources, query_rows
from service.schema import DAY_MS, METRICS, MINUTE_MS
from service.storage.fragments import spans_name
from service.storage.quarantine import READ_ERRORS

log = logging.getLogger("service.query")

ROLLUP_COLUMNS = ["device_id", "minute", "sum", "count", "min", "max"]
_VALUES = ("sum", "count", "min", "max")


def loose_partials(path: Path) -> pl.DataFrame:
    """A not-yet-compacted fragment's spanned partials, every user's: its spans file where a
    merge wrote one (see ``storage.compaction``), else computed from all its rows (a flushed
    file; or a spans file that cannot be read, which costs only the shortcut)."""
    try:
        return pl.read_parquet(path.with_name(spans_name(path.name)), schema=SPANS_SCHEMA)
    except FileNotFoundError:  # a flushed file: it has none
        return file_partials(path)
    except READ_ERRORS:
        log.warning("spans file of %s unreadable; computing from its rows", path.name)
        return file_partials(path)


def gather(rollups: list[pl.DataFrame], spans: list[pl.DataFrame]) -> pl.LazyFrame:
    """Rollup rows and spanned partials (with a user column or not) as ``SPANNED`` rows: a
    rollup row spans its whole minute."""
    start = pl.col("minute").dt.epoch("ms")
    # the empty frame brings every column, whichever kinds of source there are; no frame
    # is narrowed first (one select per frame costs more than the concat)
    both = pl.concat([pl.DataFrame(schema=SPANNED), *rollups, *spans], how="diagonal")
    return both.lazy().select(
        *ROLLUP_COLUMNS,
        pl.col("lo").fill_null(start),
        pl.col("hi").fill_null(start + MINUTE_MS - 1),
        pl.col("clean").fill_null(True),
    )


def flag_meetings(parts: pl.LazyFrame) -> pl.LazyFrame:
    """``SPANNED`` rows sorted by minute, device and ``lo``, with ``bad``: the row is not
    clean, or its span meets the previous row's of the same (minute, device)."""
    minute, device = pl.col("minute"), pl.col("device_id")
    same = ((minute == minute.shift(1)) & (device == device.shift(1))).fill_null(False)
    bad = ~pl.col("clean") | (same & (pl.col("lo") <= pl.col("hi").shift(1)))
    return parts.sort("minute", "device_id", "lo").with_columns(bad.fill_null(False).alias("bad"))


def add_up(parts: pl.LazyFrame) -> pl.LazyFrame:
    """Per (minute, device): the partials of every source added up (exact where no row of
    theirs is ``bad``, see ``flag_meetings``)."""
    return parts.group_by("minute", "device_id").agg(
        pl.col("sum").sum(),
        pl.col("count").sum(),
        pl.col("min").min(),
        pl.col("max").max(),
    )


def merge(parts: pl.DataFrame, *, spans: bool = False) -> tuple[pl.DataFrame, pl.Series]:
    """(the partials added up per (minute, device) outside dirty minutes, those minutes
    as epoch ms), from every source's ``parts``; a minute is dirty where a source is not
    clean or two sources' spans meet. Columns: ``slot``, ``device_id``, ``sum``,
    ``count``, ``min``, ``max``; with ``spans``, ``SPANNED`` (each row clean: its sources'
    spans did not meet)."""
    minute, device = pl.col("minute"), pl.col("device_id")
    ordered = parts.sort("minute", "device_id", "lo")
    same = ((minute == minute.shift(1)) & (device == device.shift(1))).fill_null(False)
    flagged = ordered.with_columns(
        same.alias("same"),
        (~pl.col("clean") | (same & (pl.col("lo") <= pl.col("hi").shift(1)))).alias("bad"),
    )
    dirty = flagged.filter(pl.col("bad"))["minute"].dt.epoch("ms").unique()
    kept = flagged.lazy()
    if dirty.len():
        kept = kept.filter(~minute.dt.epoch("ms").is_in(dirty.implode()))
    if flagged["same"].any():  # some (minute, device) has partials from several sources
        kept = kept.group_by(minute, device, maintain_order=True).agg(
            pl.col("sum").sum(),
            pl.col("count").sum(),
            pl.col("min").min(),
            pl.col("max").max(),
            pl.col("lo").min(),
            pl.col("hi").max(),
        )
    if spans:
        columns = [*(pl.col(c) for c in list(SPANNED)[:-1]), pl.lit(True).alias("clean")]
        return kept.select(columns).collect(engine=SMALL), dirty
    return kept.select(minute_partials()).collect(engine=SMALL), dirty


def minute_partials() -> list[pl.Expr]:
    """A source's partials as the columns of a query's: ``slot`` for ``minute``."""
    return [pl.col("minute").alias("slot"), pl.col("device_id"), *map(pl.col, _VALUES)]


class UserSpans:
    """Per (frame, user): the user's spanned partials of an in-memory frame of unflushed
    rows (a buffer's, a WAL tail's), kept while the frame is listed unflushed.

    Frames are immutable and held here while listed, so a frame seen again is the same
    object; ``Tiers`` keeps the old rows of a growing buffer in the same frames, so a
    query derives only from the rows that arrived since the query before it. Each kept
    summary has a serial number, never reused: the same serials name the same rows.
    """

    def __init__(self, budget_bytes: int = 16 * 1024 * 1024) -> None:
        self._frames: dict[int, pl.DataFrame] = {}  # holding them keeps their ids unique
        self._kept: dict[tuple[int, str], tuple[int, pl.DataFrame]] = {}
        self._serials = itertools.count(1)
        self._bytes = 0
        # many users queried within one flush interval: the oldest kept partials go first
        self._budget = budget_bytes
        self._lock = threading.Lock()

    def split(
        self, frames: list[pl.DataFrame], user_id: str
    ) -> tuple[list[pl.DataFrame], list[pl.DataFrame], list[int]]:
        """(the user's kept spanned partials, the frames not summarised for the user yet,
        the serials of the kept partials that hold rows); frames no longer listed are
        forgotten."""
        with self._lock:
            listed = {id(f): f for f in frames}
            if listed.keys() != self._frames.keys():
                self._kept = {k: v for k, v in self._kept.items() if k[0] in listed}
                self._bytes = sum(frame_bytes(v[1]) for v in self._kept.values())
                self._frames = listed
            kept = [self._kept.get((id(f), user_id)) for f in frames]
        found = [k for k in kept if k is not None]
        missing = [f for f, k in zip(frames, kept, strict=True) if k is None]
        return [df for _, df in found], missing, [n for n, df in found if df.height]

    def keep(self, frame: pl.DataFrame, user_id: str, spans: pl.DataFrame) -> int | None:
        """Keep ``spans``, ``user_id``'s spanned partials of ``frame`` (see ``plan``); their
        serial, or None when they are not kept (the frame is no longer listed)."""
        size = frame_bytes(spans)  # an empty frame's columns too
        with self._lock:
            if self._frames.get(id(frame)) is not frame:
                return None
            serial = next(self._serials)
            self._kept[(id(frame), user_id)] = (serial, spans)
            self._bytes += size
            while self._bytes > self._budget and self._kept:
                oldest = next(iter(self._kept))
                self._bytes -= frame_bytes(self._kept.pop(oldest)[1])
            return serial if (id(frame), user_id) in self._kept else None

    @staticmethod
    def plan(frame: pl.DataFrame, user_id: str) -> pl.LazyFrame:
        """The plan of ``user_id``'s spanned partials of ``frame`` (``SPANNED`` columns)."""
        return spanned(frame.lazy().filter(pl.col("user_id") == user_id))


class UnflushedSpans:
    """A worker's ``UserSpans``, one per metric: a query's view of the unflushed rows as
    the user's spanned partials."""

    def __init__(self, budget_bytes: int) -> None:
        self._spans = {name: UserSpans(budget_bytes) for name in METRICS}

    def of_user(self, q: Query, sources: Sources) -> tuple[list[pl.DataFrame], list[int | None]]:
        """(the user's spanned partials of each unflushed frame that holds rows of theirs,
        the serials of those partials: None for one that could not be kept)."""
        users = self._spans[q.metric]
        kept, missing, marks = users.split(sources.unflushed, q.user_id)
        serials: list[int | None] = [*marks]
        if missing:
            plans = [UserSpans.plan(frame, q.user_id) for frame in missing]
            made = pl.collect_all(plans, engine=SMALL, optimizations=PLAIN)
            for frame, spans in zip(missing, made, strict=True):
                serial = users.keep(frame, q.user_id, spans)
                if spans.height:
                    kept.append(spans)
                    serials.append(serial)
        return [df for df in kept if df.height], sorted(serials, key=lambda n: n or 0)

    def with_shared(self, q: Query, sources: Sources) -> list[pl.DataFrame]:
        """The user's spanned partials of the unflushed rows (kept per frame) and of a
        shared table's rows (computed per query)."""
        spans = self._spans[q.metric]
        kept, missing, _ = spans.split(sources.unflushed, q.user_id)
        plans = [UserSpans.plan(frame, q.user_id) for frame in missing]
        if sources.shared is not None:
            plans.append(spanned(query_rows(q, sources.shared)))
        made = pl.collect_all(plans, engine=SMALL) if plans else []
        for frame, spans_of_frame in zip(missing, made, strict=False):
            spans.keep(frame, q.user_id, spans_of_frame)
        return [*kept, *made]


def utc_days(q: Query) -> tuple[int, int]:
    """The start of the UTC day ``q`` starts in, the end of the one it ends in (epoch ms)."""
    return q.start_ms // DAY_MS * DAY_MS, -(-q.end_ms // DAY_MS) * DAY_MS


def files_key(q: Query, sources: Sources, priority: Mapping[str, int] | None) -> Hashable:
    """What the minutes of ``q``'s listed files depend on: any range within the same UTC
    days has the same."""
    return (
        *utc_days(q),
        q.metric,
        q.user_id,
        q.device_id,
        q.erased_before,
        priority is not None,
        tuple(f.name for f in sources.settled),
        tuple(f.name for f in sources.loose),
    )
