"""Streams on the Delta store: readings another machine commits to the shared table reach
this machine's streams of their users, and only theirs; failed looks are counted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import polars as pl
import pytest

from service.config import Settings
from service.ingest.buffer import Buffer
from service.ingest.health import TaskHealth
from service.live.feed import ChangeFeed
from service.live.hub import TABLE_TASK, Hub
from service.live.table_watch import TableWatch
from service.live.updates import Topic
from service.query.reader import Reader
from service.schema import Rows, rows_frame
from service.storage.delta import DeltaStore
from tests.unit.test_delta_store import store_at

MINUTE = 60_000


def reading(user: str, ts_ms: int, value: float, seq: int) -> dict[str, pl.DataFrame]:
    rows = Rows([user], ["device_a"], [ts_ms], [value])
    return {"heart_rate": rows_frame(rows, [seq])}


@pytest.fixture
def machines(tmp_path: Path) -> tuple[DeltaStore, DeltaStore]:
    table = tmp_path / "table"
    return store_at(tmp_path / "m1", table), store_at(tmp_path / "m2", table)


def test_only_other_machines_commits_of_watched_users_are_collected(
    machines: tuple[DeltaStore, DeltaStore],
) -> None:
    here, there = machines
    watch = TableWatch(here.shared_table(), check_s=0.0)
    there.publish(reading("w", 1_000, 70.0, 1))  # before the watch: the snapshot's
    watch.resume()
    assert watch.collect({("heart_rate", "w")}) == {}
    there.publish(reading("w", 2_000, 71.0, 2))
    there.publish(reading("x", 3_000, 72.0, 3))  # nobody watches x
    there.publish({"steps": reading("w", 4_000, 5.0, 4)["heart_rate"]})  # nor w's steps
    here.publish(reading("w", 5_000, 73.0, 5))  # this machine's own: came through its WAL
    found = watch.collect({("heart_rate", "w")})
    assert found is not None
    assert {key: list(v) for key, v in found.items()} == {
        ("heart_rate", "w"): [("device_a", 2_000, 71.0, 2)]
    }
    assert watch.collect({("heart_rate", "w")}) == {}  # each commit once
    slow = TableWatch(here.shared_table(), check_s=3600.0)
    assert slow.collect({("heart_rate", "w")}) == {}  # the first look
    there.publish(reading("w", 6_000, 74.0, 6))
    assert slow.collect({("heart_rate", "w")}) is None  # at most once per check_s


def test_a_stream_gets_a_bucket_another_machine_committed(
    machines: tuple[DeltaStore, DeltaStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = machines
    minute = int(time.time() * 1000) // MINUTE * MINUTE - 5 * MINUTE
    health = TaskHealth()

    async def main() -> None:
        reader = Reader(Settings(data_dir=here.root), here, Buffer())
        hub = Hub(reader, here, ChangeFeed(here.wal_dir, here.worker), health, 0.01)
        hub._table = TableWatch(here.shared_table(), check_s=0.0)
        hub.start()
        try:
            watched = await hub.open(Topic("heart_rate", "w", None, "1m"), None)
            other = await hub.open(Topic("heart_rate", "x", None, "1m"), None)
            assert await watched.next(0.1) == []  # no reading in the last hour yet
            await asyncio.to_thread(there.publish, reading("w", minute + 1_000, 80.0, 1))
            events = await watched.next(5.0)
            assert events is not None
            assert [json.loads(e[1])["heart_rate"] for e in events] == [80.0]
            assert await other.next(0.3) == []  # x's stream: nothing
            broken = RuntimeError("the store is unreachable")

            def fail(watched: object) -> None:
                raise broken

            monkeypatch.setattr(hub._table, "collect", fail)
            await asyncio.sleep(0.1)
            assert health.failures.get(TABLE_TASK, 0) >= 1
            assert any("table watch failing" in p for p in health.problems())
            monkeypatch.undo()
            # a look that was under way with the patch may fail after the undo and set its
            # back-off (30 s after this many failures): clear it until a look works
            deadline = time.monotonic() + 5.0
            while health.failures and time.monotonic() < deadline:
                hub._table.back_off(0.0)
                await asyncio.sleep(0.01)
            assert not health.failures  # a working look ends the failures
            await asyncio.to_thread(there.publish, reading("w", minute + 2 * MINUTE, 90.0, 2))
            events = await watched.next(5.0)
            assert events is not None
            assert [json.loads(e[1])["heart_rate"] for e in events] == [90.0]
            assert not health.failures
        finally:
            await hub.stop()

    asyncio.run(main())
