"""The streams a worker holds, and the one watcher task that feeds them.

Every ``tick`` the watcher takes the change feed's readings of watched users (this
worker's own and the other workers' WAL frames, and, on the Delta store, about once a
second the other machines' commits to the shared table: ``table_watch``), and for each
topic touched computes its changed buckets once (``updates.buckets``, in a thread) and
hands them to every stream of that topic. A stream costs work only when its user's
readings change; a reading nobody watches costs one set lookup. A slow tick delays the
next one, which takes more changes at once: the work is per changed topic, not reading.

Event ids are nanosecond stamps, increasing per stream: the newest sequence stamp of the
readings behind the event (or the connect time for the first hour's buckets). A resume
sends every bucket holding a reading stamped after the id (see ``updates.changed_since``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from array import array
from collections.abc import Iterable

import anyio

from service import metrics
from service.ingest.health import TaskHealth
from service.live.feed import ChangeFeed, Changes, Readings
from service.live.recent import Recent, eligible
from service.live.table_watch import TableWatch
from service.live.updates import (
    HOUR_MS,
    RESUME_ERRORS,
    Topic,
    Update,
    buckets,
    changed_since,
    last_hour,
)
from service.query.reader import Reader
from service.storage.store import Store

log = logging.getLogger("service.live")

# buckets a stream may have waiting unsent; a client that falls this far behind is dropped
MAX_PENDING = 10_000
# streams whose first events are computed at once: two dozen dropped together under
# ``ops/soak`` came back together, a thread each (a worker went from 346 to 470 MB)
OPENING_AT_ONCE = 1
TABLE_TASK = "table watch"  # its failures are counted and shown by /ready like any task's

# (event id, bucket JSON, the oldest sequence stamp behind it)
Event = tuple[int, str, int]


class Stream:
    """One open stream: buckets waiting to be sent (newest content per bucket)."""

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self._pending: dict[int, tuple[str, int, int]] = {}  # bucket -> json, newest, oldest
        self._wake = asyncio.Event()
        self._last_id = 0
        self.closed = False

    def push(
        self, updates: Iterable[Update], newest: int, oldest: int, first: bool = False
    ) -> None:
        """Queue ``updates``; ``oldest`` 0: not a change (no lag to observe). ``first``:
        a bucket already queued (by a change meanwhile) is newer and stays."""
        for bucket, data in updates:
            held = self._pending.get(bucket)
            if held is None:
                self._pending[bucket] = (data, newest, oldest)
            elif not first:
                self._pending[bucket] = (data, newest, held[2] or oldest)
        if len(self._pending) > MAX_PENDING:
            self.fall_behind()
        self._wake.set()

    def fall_behind(self) -> None:
        """Too many buckets to send: the client resumes on a new connection."""
        log.warning("a stream of %s fell behind; closing it", self.topic.metric)
        self.close()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self, timeout_s: float) -> list[Event] | None:
        """The waiting events in bucket order ([] after ``timeout_s`` with none), or
        None once the stream is closed."""
        if not self._pending and not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()
        self._wake.clear()
        if self.closed:
            return None
        events: list[Event] = []
        for bucket in sorted(self._pending):
            data, newest, oldest = self._pending[bucket]
            self._last_id = max(self._last_id + 1, newest)
            events.append((self._last_id, data, oldest))
        self._pending = {}
        return events


class Hub:
    def __init__(
        self, reader: Reader, store: Store, feed: ChangeFeed, health: TaskHealth, tick_s: float
    ) -> None:
        self._reader = reader
        self._store = store
        self._feed = feed
        self._health = health
        self._tick_s = tick_s
        self._streams: dict[Topic, set[Stream]] = {}
        self._users: dict[tuple[str, str], set[Topic]] = {}  # (metric, user) -> topics
        self._recent: dict[Topic, Recent] = {}  # what changed buckets are computed from
        feed.watched = self._users  # the feed keeps only these users' readings
        self._table = TableWatch(store.shared_table())  # other machines' flushes
        self._task: asyncio.Task[None] | None = None
        self._opening = anyio.CapacityLimiter(OPENING_AT_ONCE)

    @property
    def open_streams(self) -> int:
        return sum(map(len, self._streams.values()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream watcher")

    async def stop(self) -> None:
        """Close every stream (their responses end) and stop the watcher."""
        for streams in list(self._streams.values()):
            for stream in streams:
                stream.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await anyio.to_thread.run_sync(self._feed.close)

    async def open(self, topic: Topic, since_ns: int | None) -> Stream:
        """A new stream of ``topic`` with its first events waiting: every bucket changed
        after ``since_ns`` (a resume within the hour), else the last hour's buckets."""
        stream = Stream(topic)
        self._streams.setdefault(topic, set()).add(stream)
        self._users.setdefault((topic.metric, topic.user_id), set()).add(topic)
        metrics.STREAMS_OPEN.inc()
        recent = None
        if topic not in self._recent and eligible(topic):
            recent = self._recent[topic] = Recent(topic, time.time_ns() // 1_000_000)
        try:
            if not self._feed.active:
                # changes are recorded from now on; the snapshot below holds earlier ones
                self._feed.active = True
                await anyio.to_thread.run_sync(self._feed.resume)
                await self._resume_table()
            stamp = time.time_ns()
            opening = self._opening
            first = await anyio.to_thread.run_sync(
                self._first, topic, since_ns, stamp, limiter=opening
            )
            if recent is not None:
                await anyio.to_thread.run_sync(recent.load, self._reader, limiter=opening)
        except BaseException:
            self.close(stream)
            raise
        stream.push(first, stamp, 0, first=True)
        return stream

    def close(self, stream: Stream) -> None:
        stream.close()
        streams = self._streams.get(stream.topic)
        if streams is None or stream not in streams:
            return
        metrics.STREAMS_OPEN.dec()
        streams.discard(stream)
        if not streams:
            del self._streams[stream.topic]
            self._recent.pop(stream.topic, None)
            key = (stream.topic.metric, stream.topic.user_id)
            self._users[key].discard(stream.topic)
            if not self._users[key]:
                del self._users[key]
        if not self._streams:
            self._feed.active = False  # the segments stay open: ``resume`` reads on from there

    def _first(self, topic: Topic, since_ns: int | None, now_ns: int) -> list[Update]:
        """The first events: a resume's changed buckets, else (no id, an id over an hour
        old, or more than ``MAX_PENDING`` buckets to re-send) the last hour's."""
        now_ms = now_ns // 1_000_000
        if since_ns is not None and now_ms - since_ns // 1_000_000 <= HOUR_MS:
            try:
                starts = changed_since(self._reader, self._store, topic, since_ns)
                if len(starts) <= MAX_PENDING:
                    return buckets(self._reader, topic, starts)
                # refusing it would only bring the client back with the same id
                log.info("a resume of %d buckets; sending the last hour instead", len(starts))
            except RESUME_ERRORS:
                log.info("resume scan failed; sending the last hour instead", exc_info=True)
        return last_hour(self._reader, topic, now_ms)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            if not self._feed.active:
                continue
            try:
                await self._tick()
            except Exception as exc:  # counted and logged; the next tick tries again
                await asyncio.sleep(self._health.failed("stream watcher", exc))
            else:
                if self._health.failures.get("stream watcher"):
                    self._health.succeeded("stream watcher")

    async def _tick(self) -> None:
        own = self._feed.take_own()
        watched = set(self._users)
        changes = await anyio.to_thread.run_sync(self._feed.collect, own, watched)
        for key, rows in (await self._from_table(watched)).items():
            changes.setdefault(key, Readings()).extend(rows)
        if not changes:
            return
        topics = {
            topic: (changes[key], self._recent.get(topic))
            for key in changes
            for topic in self._users.get(key, ())
        }
        computed = await anyio.to_thread.run_sync(self._compute, topics)
        for topic, found in computed.items():
            for stream in self._streams.get(topic, ()):
                if found is None:
                    stream.fall_behind()
                else:
                    stream.push(*found)

    async def _resume_table(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._table.resume)
        except Exception as exc:  # the next look starts from the version it finds
            self._table.back_off(self._health.failed(TABLE_TASK, exc))

    async def _from_table(self, watched: set[tuple[str, str]]) -> Changes:
        """Watched readings other machines committed to a shared table; a failed look is
        counted and retried after a back-off, while the WAL's changes flow on."""
        try:
            found = await anyio.to_thread.run_sync(self._table.collect, watched)
        except Exception as exc:
            self._table.back_off(self._health.failed(TABLE_TASK, exc))
            return {}
        if found is None:
            return {}
        if self._health.failures.get(TABLE_TASK):
            self._health.succeeded(TABLE_TASK)
        return found

    @staticmethod
    def _changed(topic: Topic, rows: Readings) -> tuple[list[int], int, int]:
        """(changed bucket starts, newest stamp, oldest stamp) of ``topic`` in ``rows``."""
        code = rows.code(topic.device_id)
        if code is None or not rows:
            return [], 0, 0
        if code == -1:
            stamps, seqs = rows.ts, rows.seq
        else:
            mine = [i for i, c in enumerate(rows.device) if c == code]
            stamps = array("q", (rows.ts[i] for i in mine))
            seqs = array("q", (rows.seq[i] for i in mine))  # not empty: the device has one
        return sorted({topic.bucket(t) for t in stamps}), max(seqs), min(seqs)

    def _compute(
        self, topics: dict[Topic, tuple[Readings, Recent | None]]
    ) -> dict[Topic, tuple[list[Update], int, int] | None]:
        """Each topic's changed buckets, from its recent rows where they hold them; None
        for more than ``MAX_PENDING`` (its streams are dropped, the work spared)."""
        now_ms = time.time_ns() // 1_000_000
        computed: dict[Topic, tuple[list[Update], int, int] | None] = {}
        for topic, (readings, recent) in topics.items():
            starts, newest, oldest = self._changed(topic, readings)
            if recent is not None:
                recent.add(readings)
            if not starts:
                continue
            if len(starts) > MAX_PENDING:
                computed[topic] = None
                continue
            if recent is not None and recent.ready:
                recent.settle(self._reader, starts, now_ms)
            if recent is None or not recent.ready:  # (a failed reload drops the rows)
                computed[topic] = (buckets(self._reader, topic, starts), newest, oldest)
                continue
            held = [s for s in starts if recent.covers(s)]
            rest = [s for s in starts if not recent.covers(s)]
            found = recent.buckets(self._reader, held) if held else []
            found += buckets(self._reader, topic, rest) if rest else []
            computed[topic] = (found, newest, oldest)
        return computed
