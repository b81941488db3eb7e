"""A stream's changed buckets from its topic's recent rows are the series query's buckets.

The hub computes a changed bucket from the rows it keeps per watched topic (loaded once,
then grown by the feed's readings) instead of running the series query. Both are computed
here over the same store: level-0 fragments, unflushed rows, identities re-sent within
and across sources with new values, several devices, with and without a priority list in
both scopes, every stream interval, one device's topic and all devices'; then after an
erase of the user, and for buckets older than the kept range (the query answers those).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import polars as pl
import pytest

from service.config import Settings
from service.ingest.buffer import Buffer
from service.ingest.health import TaskHealth
from service.live.feed import ChangeFeed, Readings
from service.live.hub import Hub
from service.live.recent import FOLLOW_RETRY_MS, RECENT_MS, Recent, eligible
from service.live.updates import Topic, buckets
from service.query.reader import Reader
from service.schema import Rows
from service.storage.store import Store
from service.storage.tombstones import Tombstone
from tests.unit.test_minute_partials import rows

NOW = 1_705_312_800_000  # 2024-01-15T10:00:00Z


def as_rows(frame: pl.DataFrame) -> Rows:
    return Rows(
        frame["user_id"].to_list(),
        frame["device_id"].to_list(),
        frame["ts"].dt.epoch("ms").to_list(),
        frame["value"].to_list(),
    )


def readings(frame: pl.DataFrame, user: str) -> Readings:
    """The feed's readings of ``user`` in ``frame``."""
    mine = frame.filter(pl.col("user_id") == user)
    out = Readings()
    for reading in zip(
        mine["device_id"].to_list(),
        mine["ts"].dt.epoch("ms").to_list(),
        mine["value"].to_list(),
        mine["seq"].to_list(),
        strict=True,
    ):
        out.append(*reading)
    return out


class World:
    """A store with fragments and unflushed rows around ``NOW``, and its reader."""

    def __init__(self, tmp_path: Path, seed: int, settings: Settings) -> None:
        self.rng = random.Random(seed)
        self.store = Store(tmp_path, "w1", 5)
        self.store.ensure_layout()
        self.buffer = Buffer()
        self.reader = Reader(settings, self.store, self.buffer)
        self.seq = 1
        for _ in range(3):  # fragments: the last 40 minutes, coarse stamps (re-sent ids)
            self.store.publish({"heart_rate": self.batch(300, NOW - 2_400_000, 2_400_000)})
        self.add(self.batch(200, NOW - 1_200_000, 1_260_000))

    def batch(self, n: int, start: int, span: int) -> pl.DataFrame:
        step = self.rng.choice((500, 1_000, 7_000))
        frame = rows(self.rng, self.seq, n, start, span, step)
        self.seq += n
        return frame

    def add(self, frame: pl.DataFrame) -> None:
        self.buffer.add("heart_rate", as_rows(frame), int(frame["seq"][0]))


def starts_of(topic: Topic, low: int, high: int) -> list[int]:
    return list(range(topic.bucket(low), high, topic.width_ms))


SETTINGS = [
    {},
    {"device_priority": {"ring": 1, "watch": 2}, "priority_scope": "bucket"},
    {"device_priority": {"ring": 1, "watch": 2}, "priority_scope": "timestamp"},
]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("options", SETTINGS)
@pytest.mark.parametrize("interval", ["1s", "1m", "5m", "1h"])
@pytest.mark.parametrize("device", [None, "watch"])
def test_recent_rows_answer_every_bucket_as_the_query(
    tmp_path: Path, seed: int, options: dict, interval: str, device: str | None
) -> None:
    world = World(tmp_path, seed, Settings(data_dir=tmp_path, **options))
    topic = Topic("heart_rate", "u1", device, interval)
    assert eligible(topic)
    recent = Recent(topic, NOW)
    early = world.batch(100, NOW - 300_000, 400_000)  # acknowledged while it loads
    world.add(early)
    recent.add(readings(early, "u1"))
    recent.load(world.reader)
    assert recent.ready
    for _ in range(3):  # readings the feed brings afterwards, ids re-sent with new values
        later = world.batch(150, NOW - 600_000, 700_000)
        world.add(later)
        recent.add(readings(later, "u1"))
        starts = starts_of(topic, recent.lo, NOW + 100_000)
        assert recent.buckets(world.reader, starts) == buckets(world.reader, topic, starts)
    assert recent.buckets(world.reader, starts)  # the comparison holds buckets at all


def test_an_erase_reloads_the_rows_and_older_buckets_go_to_the_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.live.recent.FOLLOW_ROWS", -1)  # never follow back
    settings = Settings(data_dir=tmp_path)
    world = World(tmp_path, 3, settings)
    topic = Topic("heart_rate", "u1", None, "1m")
    feed = ChangeFeed(world.store.wal_dir, "w1")
    hub = Hub(world.reader, world.store, feed, TaskHealth(), 0.1)
    now = time.time_ns() // 1_000_000
    recent = Recent(topic, now)
    recent.load(world.reader)
    # readings stamped now: kept; one 20 minutes old: before the kept range
    fresh = rows(world.rng, world.seq, 40, now - 120_000, 120_000, 1_000)
    old = rows(world.rng, world.seq + 40, 1, now - 1_200_000, 1, 1).with_columns(
        pl.lit("u1").alias("user_id")
    )
    world.seq += 41
    for frame in (fresh, old):
        world.add(frame)
    changed = readings(fresh, "u1")
    changed.extend(readings(old, "u1"))
    computed = hub._compute({topic: (changed, recent)})
    starts = sorted({topic.bucket(r[1]) for r in changed})
    assert starts[0] < recent.lo <= starts[1]
    assert sorted(computed[topic][0]) == buckets(world.reader, topic, starts)
    world.store.manifest.commit(
        tombstones=lambda s: (*s.tombstones, Tombstone("u1", world.seq, 0.0))
    )
    again = rows(world.rng, world.seq, 20, now - 60_000, 60_000, 1_000)
    world.seq += 20
    world.add(again)
    computed = hub._compute({topic: (readings(again, "u1"), recent)})
    assert recent.erased_before == world.seq - 20
    starts = sorted({topic.bucket(r[1]) for r in readings(again, "u1")})
    assert sorted(computed[topic][0]) == buckets(world.reader, topic, starts)
    everything = starts_of(topic, recent.lo, now + 60_000)
    assert recent.buckets(world.reader, everything) == buckets(world.reader, topic, everything)


def test_a_topic_past_its_row_limit_is_left_to_the_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.live.recent.MAX_ROWS", 50)
    world = World(tmp_path, 4, Settings(data_dir=tmp_path))
    recent = Recent(Topic("heart_rate", "u1", None, "1m"), NOW)
    recent.load(world.reader)
    batch = world.batch(200, NOW - 60_000, 60_000)
    recent.add(readings(batch, "u1"))
    assert recent.dropped
    assert not recent.ready
    assert recent.rows == 0
    loaded = Recent(Topic("heart_rate", "u1", None, "1m"), NOW)
    loaded.load(world.reader)  # storage alone holds more than the limit from ``lo`` on
    assert loaded.dropped
    assert not loaded.ready
    assert not eligible(Topic("heart_rate", "u1", None, "1d"))


def test_changes_of_old_data_move_the_kept_rows_back_to_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream opened now on a user whose readings are stamped in the past (a backlog
    upload): the first change reads the rows from before it, later ones move the range
    forward with the data, and every bucket is the query's, computed without it."""
    world = World(tmp_path, 5, Settings(data_dir=tmp_path))
    topic = Topic("heart_rate", "u1", None, "1s")
    hub = Hub(world.reader, world.store, ChangeFeed(world.store.wal_dir, "w1"), TaskHealth(), 0.1)
    recent = Recent(topic, time.time_ns() // 1_000_000)
    recent.load(world.reader)
    assert recent.ready
    assert recent.rows == 0
    monkeypatch.setattr("service.live.hub.buckets", None)  # the query is not called
    for start in (NOW - 30_000, NOW + 900_000, NOW + 1_900_000):
        batch = world.batch(100, start, 60_000).with_columns(pl.lit("u1").alias("user_id"))
        world.add(batch)
        changed = readings(batch, "u1")
        computed = hub._compute({topic: (changed, recent)})
        starts = sorted({topic.bucket(r[1]) for r in changed})
        assert recent.lo == topic.bucket(starts[0] - RECENT_MS)
        assert sorted(computed[topic][0]) == buckets(world.reader, topic, starts)
    everything = starts_of(topic, recent.lo, NOW + 2_000_000)
    assert recent.buckets(world.reader, everything) == buckets(world.reader, topic, everything)
    assert recent.rows < world.seq  # the rows before the range were let go


def watched_now(tmp_path: Path, seed: int) -> tuple[World, Hub, Recent, int]:
    """A ``1m`` topic of ``u1`` opened now (its range before the world's readings) and loaded,
    the hub that computes it, and now in epoch ms."""
    world = World(tmp_path, seed, Settings(data_dir=tmp_path))
    hub = Hub(world.reader, world.store, ChangeFeed(world.store.wal_dir, "w1"), TaskHealth(), 0.1)
    now = time.time_ns() // 1_000_000
    recent = Recent(Topic("heart_rate", "u1", None, "1m"), now)
    recent.load(world.reader)
    return world, hub, recent, now


def tick_as_the_query(
    world: World, hub: Hub, recent: Recent, start: int, n: int, span: int = 60_000
) -> None:
    """One tick of ``n`` new readings of ``u1`` from ``start`` on: every computed bucket is
    the series query's."""
    batch = world.batch(n, start, span).with_columns(pl.lit("u1").alias("user_id"))
    world.add(batch)
    changed = readings(batch, "u1")
    computed = hub._compute({recent.topic: (changed, recent)})
    starts = sorted({recent.topic.bucket(r[1]) for r in changed})
    assert sorted(computed[recent.topic][0]) == buckets(world.reader, recent.topic, starts)


def test_a_follow_past_its_row_limit_leaves_old_changes_to_the_query_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.live.recent.FOLLOW_ROWS", 10)
    world, hub, recent, now = watched_now(tmp_path, 6)
    counted: list[int] = []
    stored = Recent._stored
    monkeypatch.setattr(Recent, "_stored", lambda r, *a: counted.append(1) or stored(r, *a))
    for _ in range(2):
        tick_as_the_query(world, hub, recent, NOW - 60_000, 50)
        assert recent.lo == recent.topic.bucket(now - RECENT_MS)
    assert counted == [1]  # the second tick did not count again


def test_a_live_device_between_a_backlogs_ticks_keeps_the_backlogs_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's watch sends live readings while a phone uploads old ones, in alternate
    ticks: the rows read to follow the backlog stay for its next tick, and are let go
    once no old change has come for ``FOLLOW_RETRY_MS``."""
    world, hub, recent, now = watched_now(tmp_path, 8)
    topic = recent.topic
    reloads: list[int] = []
    reload = Recent.reload
    monkeypatch.setattr(Recent, "reload", lambda r, *a: reloads.append(a[1]) or reload(r, *a))
    for start in (NOW, now - 30_000, NOW + 60_000, now - 20_000, NOW + 120_000):
        tick_as_the_query(world, hub, recent, start, 40, span=30_000)
    assert reloads == [topic.bucket(NOW - RECENT_MS)]  # read once, for the first old tick
    assert recent.lo == topic.bucket(NOW + 120_000 - RECENT_MS)

    later = now + 2 * FOLLOW_RETRY_MS  # live readings only, for longer than the hold
    recent.settle(world.reader, [topic.bucket(later)], later)
    assert recent.lo == topic.bucket(later - RECENT_MS)
