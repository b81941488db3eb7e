"""Streams opened together compute their first events one at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio

from service.config import Settings
from service.ingest.health import TaskHealth
from service.live import hub as hub_module
from service.live.feed import ChangeFeed
from service.live.hub import Hub
from service.live.updates import Topic
from tests.unit.test_stream_recent import World


def test_streams_opened_together_compute_their_first_events_one_at_a_time(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, 5, Settings(data_dir=tmp_path))
    hub = Hub(world.reader, world.store, ChangeFeed(world.store.wal_dir, "w1"), TaskHealth(), 0.1)
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
