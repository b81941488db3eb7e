"""Faults in a worker's background work: every waiting request is answered, every task
retries on any exception, counts it and shows on /ready, and a task that ends for good
stops the worker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import polars as pl
import pytest

from service import metrics
from service.errors import Unavailable
from service.ingest import upkeep
from service.schema import Rows
from tests.unit.test_write_path import listed_rows, make, rows, wal_rows

# a bound for a future that must be answered: a hang fails the test instead of the suite
ANSWER_WITHIN_S = 30


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, polling; bounded so that a hang fails the test."""
    async with asyncio.timeout(ANSWER_WITHIN_S):
        while not condition():  # noqa: ASYNC110 (a condition on files, not an event)
            await asyncio.sleep(0.02)


def failures(task: str) -> float:
    return metrics.TASK_FAILURES.labels(task)._value.get()


def test_a_group_commit_that_cannot_encode_answers_every_waiting_request(tmp_path) -> None:
    async def scenario() -> None:
        ingestor, store = make(tmp_path)
        await ingestor.start()
        # rows that validation would refuse: a lone surrogate cannot be encoded
        bad = Rows(["x\ud800"], ["device_a"], [rows(1).ts[0]], [70.0])
        good = [ingestor.submit("heart_rate", rows(1, start=i)) for i in range(20)]
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *good[:10], ingestor.submit("heart_rate", bad), *good[10:], return_exceptions=True
            ),
            ANSWER_WITHIN_S,
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert errors, "the group holding the bad rows was not refused"
        assert all(isinstance(e, Unavailable) for e in errors)
        assert "group commit" in " ".join(ingestor.problems())
        # the next commit works and clears the problem
        await asyncio.wait_for(ingestor.submit("heart_rate", rows(1, start=99)), ANSWER_WITHIN_S)
        assert ingestor.problems() == []
        accepted = sum(1 for o in outcomes if not isinstance(o, BaseException))
        assert wal_rows(store) == accepted + 1
        await ingestor.stop()

    asyncio.run(scenario())


def test_the_flush_loop_survives_any_flush_error_and_recovers(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, store = make(tmp_path, flush_interval_s=0.05)
        await ingestor.start()
        real = store.publish
        calls = []

        def full_disk(frames):  # what Polars raised on a full disk
            calls.append(1)
            raise pl.exceptions.ComputeError("failed to write parquet: No space left on device")

        monkeypatch.setattr(store, "publish", full_disk)
        before = failures("flush")
        await ingestor.submit("heart_rate", rows(10))
        await until(lambda: len(calls) >= 2)  # retried: the loop outlived the first failure
        assert failures("flush") >= before + 2
        assert any(p.startswith("flush failing") for p in ingestor.problems())
        assert ingestor.upkeep._task is not None
        assert not ingestor.upkeep._task.done()
        assert wal_rows(store) == 10
        monkeypatch.setattr(store, "publish", real)
        # listed first, then its WAL segment goes: wait for both
        await until(lambda: listed_rows(store) == 10 and wal_rows(store) == 0)
        assert ingestor.problems() == []
        assert wal_rows(store) == 0
        await ingestor.stop()
        assert listed_rows(store) == 10

    asyncio.run(scenario())


def test_a_failed_flush_backs_off_before_it_retries(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, store = make(tmp_path, flush_interval_s=0.01, flush_rows=1)
        await ingestor.start()
        calls = []
        monkeypatch.setattr(store, "publish", lambda frames: calls.append(1) or 1 / 0)
        await ingestor.submit("heart_rate", rows(5))
        await asyncio.sleep(0.6)
        # at a 0.01 s interval without backoff this would be about 60 attempts
        assert 1 <= len(calls) <= 3
        monkeypatch.undo()
        await ingestor.stop()

    asyncio.run(scenario())


def test_recovery_and_compaction_errors_are_counted_and_named(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, _ = make(tmp_path)
        await ingestor.start()
        monkeypatch.setattr(upkeep, "replay_orphans", lambda store: {}["no such key"])

        async def broken_child():
            raise RuntimeError("the child could not start")

        monkeypatch.setattr(ingestor.compactor, "_compact_in_child", broken_child)
        before = failures("recovery"), failures("compaction")
        await ingestor.upkeep.recover()
        await ingestor.compactor.compact()
        assert (failures("recovery"), failures("compaction")) == (before[0] + 1, before[1] + 1)
        named = " ".join(ingestor.problems())
        assert "recovery failing" in named
        assert "KeyError" in named
        assert "compaction failing" in named
        monkeypatch.undo()
        await ingestor.upkeep.recover()
        assert "recovery" not in " ".join(ingestor.problems())
        await ingestor.stop()

    asyncio.run(scenario())


class _Broken(BaseException):
    """Not an ``Exception``: the one kind a step's retry does not catch."""


def test_a_flush_loop_that_ends_stops_the_worker(tmp_path, monkeypatch) -> None:
    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append((pid, sig)))

    async def scenario() -> None:
        ingestor, _ = make(tmp_path, flush_interval_s=0.01, master_pid=os.getppid())

        async def broken(due):
            raise _Broken

        monkeypatch.setattr(ingestor.upkeep, "_tick_once", broken)
        await ingestor.start()
        assert ingestor.upkeep._task is not None
        await asyncio.wait([ingestor.upkeep._task], timeout=ANSWER_WITHIN_S)
        assert ingestor.upkeep._task.done()
        assert any("flush loop ended" in p for p in ingestor.problems())
        assert killed == [(os.getpid(), signal.SIGTERM)]
        await ingestor.stop()

    asyncio.run(scenario())


def test_full_buffers_make_the_worker_not_ready(tmp_path) -> None:
    async def scenario() -> None:
        ingestor, _ = make(tmp_path, max_buffer_rows=10)
        await ingestor.start()
        await ingestor.submit("heart_rate", rows(8))
        assert ingestor.problems() == []
        with pytest.raises(Unavailable):
            await ingestor.submit("heart_rate", rows(5, start=50))
        assert any("buffers are full" in p for p in ingestor.problems())
        await ingestor.flusher.flush()
        ingestor.health.overloaded_at = float("-inf")  # the refusal is long past
        assert ingestor.problems() == []
        await ingestor.stop()

    asyncio.run(scenario())


def test_a_long_compaction_pass_does_not_make_the_loop_spin(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, _ = make(tmp_path, compact_interval_s=0.1)
        release = asyncio.Event()
        passes: list[int] = []

        async def long_pass() -> None:
            passes.append(1)
            await release.wait()

        ticks: list[int] = []
        real_observe = ingestor.upkeep._observe
        monkeypatch.setattr(ingestor.compactor, "compact", long_pass)
        monkeypatch.setattr(ingestor.upkeep, "_observe", lambda: (ticks.append(1), real_observe()))
        await ingestor.start()
        await until(lambda: len(passes) == 1)
        ticks.clear()
        await asyncio.sleep(1.0)
        # one tick per compaction interval while the pass runs (about 10), not one per
        # 10 ms (about 100)
        assert len(ticks) <= 30
        assert len(passes) == 1  # and no second pass beside the running one
        release.set()
        await ingestor.stop()

    asyncio.run(scenario())


def test_a_failing_wal_write_is_named_until_a_write_works(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, _ = make(tmp_path)
        await ingestor.start()
        real = os.fsync

        def full(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(Unavailable):
            await ingestor.submit("heart_rate", rows(1))
        # a second failed commit must not clear it either
        with pytest.raises(Unavailable):
            await ingestor.submit("heart_rate", rows(1, start=1))
        assert any(p.startswith("group commit failing (2 in a row)") for p in ingestor.problems())
        monkeypatch.setattr(os, "fsync", real)
        await ingestor.submit("heart_rate", rows(1, start=2))
        assert ingestor.problems() == []
        await ingestor.stop()

    asyncio.run(scenario())
