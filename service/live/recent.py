"""A watched topic's recent rows: what the changed buckets of its streams are computed from.

Computed by the series query, each changed bucket costs the query's fixed work: the
unflushed rows and the not-yet-compacted files of the metric searched for one user,
about 11 ms a bucket under single-POST load, whatever the bucket holds. Instead, the hub
keeps per watched topic its raw rows of every bucket from a recent start on: loaded once
through the plain path's own reader (``Reader.rows``, de-duplicated), then grown by the
readings the change feed brings (every reading of a watched user any worker, or another
machine, acknowledges: see ``live.feed`` and ``live.table_watch``). A changed bucket in
that range is the plain path's computation (``dedupe``, priority partials, buckets) over
those rows: what a GET of the bucket answers, since a bucket's answer depends only on its
own rows. A change further back is computed by the query, unless the range follows it.

The kept range follows the topic's data, not the clock: each tick it starts ``RECENT_MS``
before the oldest changed bucket (or now, if earlier). A change before the range (a
gateway uploading a backlog, a replay of old data) reads the rows from there on again,
when storage holds at most ``FOLLOW_ROWS`` of them; otherwise such buckets are left to
the query, and the next try waits ``FOLLOW_RETRY_MS``. A change that far back also holds
the range there for ``FOLLOW_RETRY_MS``, so the ticks of a live device between a
backlog's do not drop the rows that the backlog's next tick would read again.

The rows stay what a GET reads as long as rows only arrive. Rows leave storage through an
erase (a new tombstone of the user: the hub drops the topic's rows and loads them again)
and retention (days long past ``RECENT_MS``); a rollup answers only days past raw
retention. Topics of buckets wider than an hour are computed by the query: their recent
rows would be up to a day of readings.
"""

from __future__ import annotations

import logging

import polars as pl

from service.live.feed import Readings
from service.live.updates import HOUR_MS, RESUME_ERRORS, Topic, Update, as_updates
from service.query.aggregate import SMALL, combine, dedupe, priority_partials
from service.query.buckets import STATS, Shape
from service.query.reader import Reader
from service.query.series import shaped
from service.query.sources import Query
from service.schema import ROW_SCHEMA

log = logging.getLogger("service.live")

RECENT_MS = 15 * 60_000  # the buckets kept start this long before the oldest change
MAX_ROWS = 200_000  # a topic with more recent rows than this is computed by the query
FOLLOW_ROWS = 50_000  # the most rows read again to follow a change before the kept range
FOLLOW_RETRY_MS = 60_000  # after a refused follow, changes that far back go to the query
FAR_MS = 253_402_300_800_000  # 10000-01-01: every reading of the topic from ``lo`` on


def eligible(topic: Topic) -> bool:
    return topic.width_ms <= HOUR_MS


class Recent:
    """Every row of one topic from the bucket starting at ``lo`` on (not de-duplicated:
    the feed's readings join as they come), once ``ready``; and the user's erase
    boundary they were read at.

    Made on the event loop when the topic's first stream opens, after the topic is
    registered with the feed; ``load`` (in a thread) then reads storage, while the readings
    the feed brings meanwhile are kept by ``add``: no reading falls between the two, and
    one in both is the same row (same ``seq``), which the computation de-duplicates.
    """

    __slots__ = (
        "_added",
        "_follow_at",
        "_frame",
        "_held",
        "dropped",
        "erased_before",
        "lo",
        "ready",
        "topic",
    )

    def __init__(self, topic: Topic, now_ms: int) -> None:
        self.topic = topic
        self.lo = topic.bucket(now_ms - RECENT_MS)
        self.erased_before = 0
        self.ready = False  # loaded: the rows answer the buckets from ``lo`` on
        self.dropped = False  # too many rows, or a failed load: the query answers
        self._frame = pl.DataFrame(schema=ROW_SCHEMA)
        self._added = Readings()
        self._follow_at = 0  # epoch ms: a change before ``lo`` may read the rows again
        self._held = (0, 0)  # the oldest start of the last old change, and until when

    def load(self, reader: Reader) -> None:
        """Read the topic's rows from ``lo`` on (blocking); the readings added so far stay.
        A failed read (a file gone under it) leaves the topic to the query."""
        try:
            self._read(reader)
        except RESUME_ERRORS:
            log.info("reading a stream's recent rows failed", exc_info=True)
            self.drop()

    def settle(self, reader: Reader, starts: list[int], now_ms: int) -> None:
        """Fit the kept rows to a tick's changed bucket ``starts`` (sorted; blocking): read
        them again after an erase of the user, or from before the oldest start if it is
        not covered (and storage holds few rows from there on); then drop the rows of
        buckets ``RECENT_MS`` before both that start and now (and before the last change
        that far back, for ``FOLLOW_RETRY_MS`` after it)."""
        if reader.erased_before(self.topic.user_id) != self.erased_before:
            self.reload(reader, self.lo)  # an erase: rows left storage
        elif not self.covers(starts[0]) and now_ms >= self._follow_at:
            lo = self.topic.bucket(starts[0] - RECENT_MS)
            if self._stored(reader, lo) <= FOLLOW_ROWS:
                self.reload(reader, lo)
            else:
                self._follow_at = now_ms + FOLLOW_RETRY_MS
        if self.ready:
            at = min(starts[0], now_ms)
            if at < now_ms - RECENT_MS:
                self._held = (at, now_ms + FOLLOW_RETRY_MS)
            elif now_ms < self._held[1]:
                at = min(at, self._held[0])
            self.trim(at)

    def reload(self, reader: Reader, lo: int) -> None:
        """Read the rows of the buckets from ``lo`` on again: every reading added so far
        was acknowledged, so storage holds it."""
        self.ready, self._added, self.lo = False, Readings(), lo
        self.load(reader)

    def _stored(self, reader: Reader, lo: int) -> int:
        """How many rows of the topic storage holds from ``lo`` on (identities re-sent
        count more than once), counted in bounded memory; a failed read counts as many."""
        unflushed = reader.unflushed(self.topic.metric)
        q = Query(self.topic.metric, self.topic.user_id, lo, FAR_MS, self.topic.device_id)
        try:
            found = [
                rows.select(pl.len()) for rows in reader.rows(q, unflushed) if rows is not None
            ]
            return sum(int(n.item()) for n in pl.collect_all(found, engine="streaming"))
        except RESUME_ERRORS:
            log.info("counting a stream's rows failed", exc_info=True)
            return FOLLOW_ROWS + 1

    def drop(self) -> None:
        self.ready, self.dropped = False, True
        self._frame, self._added = pl.DataFrame(schema=ROW_SCHEMA), Readings()

    def _read(self, reader: Reader) -> None:
        erased = reader.erased_before(self.topic.user_id)
        unflushed = reader.unflushed(self.topic.metric)  # before the manifest, as every query
        q = Query(self.topic.metric, self.topic.user_id, self.lo, FAR_MS, self.topic.device_id)
        settled, fresh = reader.rows(q, unflushed)
        frame = pl.DataFrame(schema=ROW_SCHEMA)
        if settled is not None or fresh is not None:
            frame = combine(settled, fresh).collect()
        if frame.height > MAX_ROWS:
            self.drop()
        elif not self.dropped:  # ``add`` may drop it meanwhile, on the watcher's thread
            self._frame, self.erased_before, self.ready = frame, erased, True

    @property
    def rows(self) -> int:
        return self._frame.height + len(self._added)

    def covers(self, start: int) -> bool:
        return start >= self.lo

    def add(self, readings: Readings) -> None:
        """The feed's readings of the topic's user (any device; those of other devices, and
        those before ``lo``, are left out)."""
        if self.dropped:
            return
        self._added.extend(readings.picked(self.topic.device_id, self.lo))
        if self.rows > MAX_ROWS:
            self.drop()

    def buckets(self, reader: Reader, starts: list[int]) -> list[Update]:
        """The current content of the buckets starting at ``starts`` (each ``covers``; a
        bucket that holds no reading any more is left out). Blocking."""
        width = self.topic.width_ms
        ts = pl.col("ts").dt.epoch("ms")
        rows = (
            self._joined()
            .lazy()
            .filter(
                (ts >= min(starts))
                & (ts < max(starts) + width)
                & (ts // width * width).is_in(starts)
                & (pl.col("seq") >= self.erased_before)
            )
        )
        return updates(reader, self.topic, rows)

    def trim(self, at_ms: int) -> None:
        """Drop the rows of buckets starting more than ``RECENT_MS`` before ``at_ms``."""
        lo = self.topic.bucket(at_ms - RECENT_MS)
        if lo > self.lo:
            self.lo = lo
            self._frame = self._joined().filter(pl.col("ts").dt.epoch("ms") >= lo)

    def _joined(self) -> pl.DataFrame:
        if self._added:
            added, self._added = self._added, Readings()
            new = pl.DataFrame(
                {
                    "user_id": [self.topic.user_id] * len(added),
                    "device_id": added.device_ids(),
                    "ts": added.ts.tolist(),
                    "value": added.value.tolist(),
                    "seq": added.seq.tolist(),
                },
                schema=ROW_SCHEMA,
            )
            self._frame = pl.concat([self._frame, new], rechunk=self._frame.n_chunks() >= 16)
        return self._frame


def updates(reader: Reader, topic: Topic, rows: pl.LazyFrame) -> list[Update]:
    """The buckets of ``rows`` (one topic's raw rows, not de-duplicated) by the plain path."""
    shape = Shape(topic.interval, "UTC", STATS)
    priority = reader.priority if topic.device_id is None else None
    parts = priority_partials(dedupe(rows), priority, reader.scope, shape.slot, True, SMALL)
    if parts.height == 0:
        return []
    return as_updates(shaped(reader, topic.metric, topic.device_id, parts, shape))
