"""Several metrics submitted at once: one group commit makes them all durable, or none."""

from __future__ import annotations

import asyncio
import os

import pytest

from service.errors import Overloaded, StorageFull
from service.schema import Rows
from tests.unit.test_write_path import make, rows, wal_frames


def metric_rows(value: float) -> Rows:
    return Rows(["u"], ["device_a"], [1_705_312_800_000], [value])


def test_one_request_of_three_metrics_costs_one_fsync(tmp_path, monkeypatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    async def scenario() -> None:
        ingestor, store = make(tmp_path)
        await ingestor.start()
        monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
        parts = {"heart_rate": rows(2), "steps": metric_rows(40), "calories": metric_rows(3.5)}
        await ingestor.submit_many(parts)
        monkeypatch.undo()
        assert len(calls) == 1
        frames = wal_frames(store)
        assert {f.metric: len(f.rows) for f in frames} == {
            "heart_rate": 2,
            "steps": 1,
            "calories": 1,
        }
        assert ingestor.buffer.rows == 4
        await ingestor.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_a_full_buffer_refuses_every_metric_of_the_request(tmp_path, durability: str) -> None:
    async def scenario() -> None:
        ingestor, _ = make(tmp_path, durability=durability, max_buffer_rows=3)
        await ingestor.start()
        await ingestor.submit_many({"steps": metric_rows(1)})
        with pytest.raises(Overloaded):
            await ingestor.submit_many({"heart_rate": rows(2), "steps": metric_rows(2)})
        assert ingestor.buffer.rows == 1  # nothing of the refused request was kept
        await ingestor.submit_many({"heart_rate": rows(2)})
        assert ingestor.buffer.rows == 3
        await ingestor.stop()

    asyncio.run(scenario())


def test_a_failed_group_commit_fails_the_whole_request(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, _ = make(tmp_path)
        await ingestor.start()

        def broken(*_args: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("service.ingest.commit._write", broken)
        with pytest.raises(StorageFull):
            await ingestor.submit_many({"heart_rate": rows(1), "steps": metric_rows(5)})
        assert ingestor.buffer.rows == 0
        monkeypatch.undo()
        await ingestor.submit_many({"heart_rate": rows(1), "steps": metric_rows(5)})
        assert ingestor.buffer.rows == 2
        await ingestor.stop()

    asyncio.run(scenario())
