"""Streams opened together compute their first events one at a time, and a topic with
more changed buckets than a stream may have waiting is dropped without computing them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import pytest

from service.config import Settings
from service.ingest.health import TaskHealth
from service.live import hub as hub_module
from service.live.feed import ChangeFeed, Readings
from service.live.hub import Hub, Stream
from service.live.updates import Topic, buckets, changed_since, last_hour
from tests.unit.test_stream_recent import NOW, World


def world_and_hub(tmp_path: Path, seed: int) -> tuple[World, Hub]:
    """A store around ``NOW`` and a hub over it (not started: ticks are called directly)."""
    world = World(tmp_path, seed, Settings(data_dir=tmp_path))
    return world, Hub(
        world.reader, world.store, ChangeFeed(world.store.wal_dir, "w1"), TaskHealth(), 0.1
    )


def test_streams_opened_together_compute_their_first_events_one_at_a_time(
    tmp_path: Path,
) -> None:
    _, hub = world_and_hub(tmp_path, 5)
    first = hub._first
    running, most, calls = 0, 0, 0
    lock = threading.Lock()

    def counted(*args: object) -> list:
        nonlocal running, most, calls
        with lock:
            calls += 1
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # long enough for every other opening to start meanwhile
        try:
            return first(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running -= 1

    hub._first = counted  # type: ignore[method-assign]
    topics = [Topic("heart_rate", "u1", None, interval) for interval in ("1s", "1m", "5m", "1h")]

    async def open_all() -> int:
        opened = 0

        async def one(topic: Topic) -> None:
            nonlocal opened
            await hub.open(topic, None)
            opened += 1

        async with anyio.create_task_group() as group:
            for topic in topics:
                group.start_soon(one, topic)
        return opened

    assert anyio.run(open_all) == calls == len(topics)
    assert most == hub_module.OPENING_AT_ONCE == 1


def seconds(n: int) -> Readings:
    """``n`` readings in ``n`` different seconds."""
    out = Readings()
    for i in range(n):
        out.append("watch", NOW + i * 1_000, 70.0, 100_000 + i)
    return out


def test_a_topic_changed_beyond_what_a_stream_may_hold_is_dropped_uncomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, hub = world_and_hub(tmp_path, 6)
    topic = Topic("heart_rate", "u1", None, "1s")
    monkeypatch.setattr(hub_module, "MAX_PENDING", 5)
    computed = hub._compute({topic: (seconds(5), None)})  # at the limit: computed
    found = computed[topic]
    assert found is not None
    assert found[1:] == (100_004, 100_000)  # the newest and oldest stamps of the change

    def refuse(*args: object) -> list:
        raise AssertionError("buckets computed for streams that are dropped anyway")

    monkeypatch.setattr(hub_module, "buckets", refuse)
    assert hub._compute({topic: (seconds(6), None)}) == {topic: None}
    stream = Stream(topic)
    stream.fall_behind()
    assert anyio.run(stream.next, 0.01) is None  # its response ends; the client resumes


def test_a_resume_with_more_buckets_than_a_stream_may_hold_gets_the_last_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, hub = world_and_hub(tmp_path, 7)
    topic = Topic("heart_rate", "u1", None, "1m")
    since_ns = NOW * 1_000_000
    world.seq = since_ns + 1  # readings stamped after the event id the client resumes from
    world.add(world.batch(600, NOW - 2 * 86_400_000, 86_400_000))  # a day back-filled
    now_ns = since_ns + 2_000_000_000
    hour = last_hour(world.reader, topic, now_ns // 1_000_000)
    changed = changed_since(world.reader, world.store, topic, since_ns)
    assert len(changed) > len(hour) > 0

    assert hub._first(topic, since_ns, now_ns) == buckets(world.reader, topic, changed)
    monkeypatch.setattr(hub_module, "MAX_PENDING", len(hour))
    assert hub._first(topic, since_ns, now_ns) == hour  # before: refused, and again on retry

    monkeypatch.setattr(hub_module.time, "time_ns", lambda: now_ns)  # the stream's "now"
    stream = anyio.run(hub.open, topic, since_ns)
    events = anyio.run(stream.next, 0.01)
    assert events is not None
    assert [data for _, data, _ in events] == [data for _, data in hour]
