"""Write-path invariants: WAL before ack, group commit, flush ordering, orphan replay."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import polars as pl
import pytest

from service.config import Settings
from service.ingest import buffer as buffer_module
from service.ingest.buffer import Buffer
from service.ingest.ingestor import Ingestor
from service.query.reader import Reader
from service.query.series import json_body
from service.query.sources import Query
from service.schema import Rows, rows_frame
from service.storage.recovery import replay_orphans
from service.storage.store import Store
from service.storage.wal import (
    Frame,
    SegmentWriter,
    encode_frame,
    list_segments,
    read_segment,
    segment_path,
)

BASE = 1_705_312_800_000


def rows(n: int, user: str = "u", start: int = 0) -> Rows:
    return Rows(
        [user] * n,
        ["device_a"] * n,
        [BASE + (start + i) * 1000 for i in range(n)],
        [60.0 + i % 100 for i in range(n)],
    )


def make(tmp_path: Path, worker: str = "w1", **changes: object) -> tuple[Ingestor, Store]:
    fields = {"flush_interval_s": 3600, "recovery_interval_s": 3600, **changes}
    settings = Settings(data_dir=tmp_path, **fields)  # type: ignore[arg-type]
    store = Store(tmp_path, worker, settings.lock_timeout_s)
    return Ingestor(settings, store, Buffer()), store


def wal_frames(store: Store) -> list[Frame]:
    return [
        f for paths in list_segments(store.wal_dir).values() for p in paths for f in read_segment(p)
    ]


def wal_rows(store: Store) -> int:
    return sum(len(f.rows) for f in wal_frames(store))


def listed_rows(store: Store) -> int:
    return sum(f.rows for f in store.manifest.read().fragments)


def test_acknowledged_rows_are_in_the_wal_and_fsyncs_are_shared(tmp_path, monkeypatch) -> None:
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))

    async def scenario() -> None:
        ingestor, store = make(tmp_path)
        await ingestor.start()
        calls.clear()
        await asyncio.gather(*(ingestor.submit("heart_rate", rows(1, start=i)) for i in range(50)))
        assert wal_rows(store) == 50
        assert 1 <= len(calls) < 50  # one fsync covered many requests
        await ingestor.stop()

    asyncio.run(scenario())


def test_a_group_commit_writes_one_frame_per_metric_in_submission_order(tmp_path) -> None:
    async def scenario() -> None:
        ingestor, store = make(tmp_path)
        await ingestor.start()
        await ingestor.submit("heart_rate", rows(1, start=0))  # the first group: alone
        # the same identity 40 times over: the last submitted must be the one that wins
        await asyncio.gather(
            *(
                ingestor.submit("heart_rate", Rows(["u"], ["device_a"], [BASE], [float(i)]))
                for i in range(40)
            )
        )
        frames = wal_frames(store)
        assert sum(len(f.rows) for f in frames) == 41
        assert len(frames) < 10  # one per group commit, not one per request
        values = [v for f in frames for v in f.rows.value]
        seqs = [f.first_seq + i for f in frames for i in range(len(f.rows))]
        assert values[1:] == [float(i) for i in range(40)]
        assert seqs == sorted(set(seqs))
        answer = json_body(
            Reader(ingestor._settings, store, ingestor.buffer),
            Query("heart_rate", "u", BASE, BASE + 60_000),
        )
        assert answer is not None
        assert b'"heart_rate":39.0' in answer
        await ingestor.stop()

    asyncio.run(scenario())


def test_write_mode_skips_fsync_but_still_logs(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, store = make(tmp_path, durability="write")
        await ingestor.start()
        monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync in write mode"))
        await ingestor.submit("heart_rate", rows(3))
        assert wal_rows(store) == 3
        monkeypatch.undo()
        await ingestor.stop()

    asyncio.run(scenario())


def test_wal_survives_a_failed_flush_and_goes_after_a_good_one(tmp_path, monkeypatch) -> None:
    async def scenario() -> None:
        ingestor, store = make(tmp_path)
        await ingestor.start()
        await ingestor.submit("heart_rate", rows(10))
        real = store.manifest.commit

        def broken(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store.manifest, "commit", broken)
        assert await ingestor.flusher.flush() is False
        assert wal_rows(store) == 10  # rows not in the manifest keep their WAL
        assert ingestor.buffer.rows == 10
        assert os.listdir(store.fragment_dir) == []  # the unlisted fragment is gone
        monkeypatch.setattr(store.manifest, "commit", real)
        await ingestor.submit("heart_rate", rows(5, start=100))
        assert await ingestor.flusher.flush() is True
        assert listed_rows(store) == 15
        assert wal_rows(store) == 0
        await ingestor.stop()

    asyncio.run(scenario())


def test_flushing_rows_stay_visible_until_listed() -> None:
    buffer = Buffer()
    buffer.add("heart_rate", rows(4), 1)
    buffer.begin_flush()
    assert sum(df.height for df in buffer.snapshot("heart_rate")) == 4
    buffer.add("heart_rate", rows(2, start=50), 10)
    assert sum(df.height for df in buffer.snapshot("heart_rate")) == 6
    buffer.end_flush()
    assert sum(df.height for df in buffer.snapshot("heart_rate")) == 2


def conversions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the buffer's row-to-frame conversions from now on, in order."""
    converted: list[int] = []
    real = buffer_module.rows_frame

    def counting(rows_: Rows, seq: list[int]) -> pl.DataFrame:
        converted.append(len(rows_))
        return real(rows_, seq)

    monkeypatch.setattr(buffer_module, "rows_frame", counting)
    return converted


def test_a_buffered_row_is_converted_to_a_frame_once_however_often_it_is_read(
    monkeypatch,
) -> None:
    converted = conversions(monkeypatch)
    buffer, expected, seq = Buffer(), [], 1
    for i in range(40):  # many small additions, each read at once
        batch = rows(3, start=10 * i)
        buffer.add("heart_rate", batch, seq)
        expected += [(BASE + (10 * i + k) * 1000, seq + k) for k in range(3)]
        seq += 3
        frame = pl.concat(buffer.snapshot("heart_rate"))
        assert list(zip(frame["ts"].dt.epoch("ms"), frame["seq"], strict=True)) == expected
        assert len(buffer.snapshot("heart_rate")) <= 4  # a few frames, not one per read
        if i == 20:
            buffer.begin_flush()  # the flushing generation reuses what was converted
            assert buffer.flushing_frames()["heart_rate"].height == len(expected)
            buffer.end_flush()
            expected = []
    assert sum(converted) == 40 * 3
    assert buffer.snapshot("heart_rate")[0] is buffer.snapshot("heart_rate")[0]


def test_rows_are_converted_as_they_arrive_so_a_flush_converts_only_the_rest(
    monkeypatch,
) -> None:
    # a flush's thread converting all its rows at once held the GIL, and so every
    # request of the worker, for tens of milliseconds
    converted = conversions(monkeypatch)
    buffer, plain, seq = Buffer(), [], 1
    for i in range(25):  # 25 batches of 1,000 readings, none of them read
        batch = rows(1000, start=1000 * i)
        buffer.add("heart_rate", batch, seq)
        plain.append(rows_frame(batch, range(seq, seq + 1000)))
        seq += 1000
    assert converted, "nothing was converted as the rows arrived"
    assert max(converted) < buffer_module.CONVERT_ROWS + 1000
    assert sum(converted) > 25_000 - buffer_module.CONVERT_ROWS
    converted.clear()
    buffer.begin_flush()
    frame = buffer.flushing_frames()["heart_rate"]
    assert sum(converted) < buffer_module.CONVERT_ROWS  # the flush converts only the rest
    assert frame.equals(pl.concat(plain))  # the same frame as converting all at once


def dead_worker_wal(store: Store, worker: str, n: int) -> Path:
    store.ensure_layout()
    path = segment_path(store.wal_dir, worker, 1)
    writer = SegmentWriter(path)
    writer.append(encode_frame("heart_rate", 1, rows(n)))
    writer.close()
    return path


def test_a_dead_workers_wal_is_replayed_once_and_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        ingestor, store = make(tmp_path, worker="alive")
        orphan = dead_worker_wal(store, "dead", 7)
        await ingestor.start()
        assert not orphan.exists()
        assert listed_rows(store) == 7
        assert not (store.wal_dir / "dead.lock").exists()
        await ingestor.stop()

    asyncio.run(scenario())


def test_replaying_twice_shows_each_reading_once(tmp_path: Path) -> None:
    store = Store(tmp_path, "reader", 5)
    dead_worker_wal(store, "dead1", 5)
    assert replay_orphans(store) == 5
    dead_worker_wal(store, "dead2", 5)  # the same rows, as if replayed again
    assert replay_orphans(store) == 5
    assert listed_rows(store) == 10
    reader = Reader(Settings(data_dir=tmp_path), store, Buffer())
    body = json_body(reader, Query("heart_rate", "u", BASE, BASE + 3_600_000))
    assert body is not None
    assert pl.read_json(body)["count"][0] == 1  # 5 readings within one minute


def test_a_live_workers_wal_is_left_alone_but_visible_to_queries(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer, store = make(tmp_path, worker="writer")
        await writer.start()
        await writer.submit("heart_rate", rows(3))
        other = Store(tmp_path, "other", 5)
        assert replay_orphans(other) == 0
        assert wal_rows(store) == 3
        body = json_body(
            Reader(Settings(data_dir=tmp_path), other, Buffer()),
            Query("heart_rate", "u", BASE, BASE + 60_000),
        )
        assert body is not None
        await writer.stop()

    asyncio.run(scenario())


def test_a_fragment_is_durable_before_the_manifest_lists_it(tmp_path, monkeypatch) -> None:
    import service.storage.files as files

    events: list[str] = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        files.os,
        "replace",
        lambda a, b: (events.append(f"rename {Path(b).name}"), real_replace(a, b))[1],
    )
    monkeypatch.setattr(
        files.os,
        "link",
        lambda a, b: (events.append(f"rename {Path(b).name}"), real_link(a, b))[1],
    )
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    frame = pl.DataFrame(
        {"user_id": ["u"], "device_id": ["d"], "ts": [BASE], "value": [70.0], "seq": [1]}
    ).cast({"ts": pl.Datetime("ms", "UTC")})
    (info,) = store.publish({"heart_rate": frame})
    fragment = events.index(f"rename {info.name}")
    manifest = events.index("rename manifest.json")
    assert events[fragment - 1] == "fsync"  # the file before its rename
    assert events[fragment + 1] == "fsync"  # the directory after it
    assert fragment < manifest
    assert events[manifest - 1] == "fsync"


def test_recovery_never_touches_the_lock_of_a_worker_that_is_starting(tmp_path) -> None:
    # a starting worker has created its lock file but holds no segment yet
    store = Store(tmp_path, "recoverer", 5)
    store.ensure_layout()
    starting = store.wal_dir / "starting.lock"
    starting.touch()
    assert replay_orphans(store) == 0
    assert starting.exists()
    ingestor, _ = make(tmp_path, worker="starting")

    async def scenario() -> None:
        await ingestor.start()  # takes its lock: nobody else held it
        await ingestor.stop()

    asyncio.run(scenario())


def test_stale_lock_files_without_segments_are_removed(tmp_path) -> None:
    store = Store(tmp_path, "recoverer", 5)
    store.ensure_layout()
    stale = store.wal_dir / "gone.lock"
    stale.touch()
    os.utime(stale, (0, 0))
    replay_orphans(store)
    assert not stale.exists()


def test_no_compaction_process_starts_when_there_is_nothing_to_merge(tmp_path, monkeypatch) -> None:
    from service.ingest import compactor

    started: list[list[str]] = []

    def popen(args, **kwargs):
        started.append(args)
        raise OSError("not started in this test")

    monkeypatch.setattr(compactor.subprocess, "Popen", popen)

    async def scenario() -> None:
        ingestor, _ = make(tmp_path, compact_min_files=2)
        await ingestor.start()
        await ingestor.compactor.compact()  # an empty store
        assert started == []
        for i in range(2):
            await ingestor.submit("heart_rate", rows(5, start=10 * i))
            await ingestor.flusher.flush()
        await ingestor.compactor.compact()  # two level-0 files: a pass is due
        assert len(started) == 1
        await ingestor.stop()

    asyncio.run(scenario())


def test_merges_run_at_the_workers_priority_once_they_fall_behind(tmp_path, monkeypatch) -> None:
    # below it, requests come first; at 32 x min_files unmerged files, ingestion is
    # outrunning the merges, which then compete as equals
    from service.ingest import compactor

    nices: list[str] = []

    def popen(args, **kwargs):
        nices.append(args[args.index("--nice") + 1])
        raise OSError("not started in this test")

    monkeypatch.setattr(compactor.subprocess, "Popen", popen)

    async def scenario() -> None:
        ingestor, store = make(tmp_path, compact_min_files=2)
        await ingestor.start()
        for i in range(64):
            store.publish({"heart_rate": rows_frame(rows(2, start=2 * i), [2 * i, 2 * i + 1])})
            if i in (62, 63):  # 63 files, then 64
                await ingestor.compactor.compact()
        await ingestor.stop()

    asyncio.run(scenario())
    assert nices == ["10", "0"]


def test_stop_finishes_when_the_flush_loop_was_just_woken(tmp_path) -> None:
    """A stop that arrives in the same loop turn as a wake-up (a full buffer under load)
    must still end the flush loop, flush and delete the WAL, not wait forever."""

    async def scenario() -> None:
        ingestor, store = make(tmp_path)
        await ingestor.start()
        await ingestor.submit("heart_rate", rows(5))
        await asyncio.sleep(0.05)  # the flush loop waits for its next wake-up
        ingestor.upkeep.wake.set()  # what a full buffer does
        stopping = asyncio.create_task(ingestor.stop())
        # asyncio.wait, not wait_for: on 3.11 a wait_for timeout can be swallowed as well
        done, _ = await asyncio.wait([stopping], timeout=20)
        assert done, "stop() still waits for the flush loop"
        await stopping
        assert listed_rows(store) == 5
        assert wal_rows(store) == 0

    asyncio.run(scenario())
