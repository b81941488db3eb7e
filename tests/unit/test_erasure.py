"""Erasure: readers honour a tombstone at once; ``finish`` rewrites every file holding the
user (ranges of a compacted day still tiling), waits for WALs, and the tombstone goes last."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
from filelock import FileLock

from service.config import Settings
from service.ingest.buffer import Buffer
from service.maintenance import verify
from service.query.reader import Reader
from service.query.sources import Query
from service.query.users import Page, UserIndex
from service.schema import ROW_SCHEMA, Rows, rows_frame
from service.storage import erasure
from service.storage.compaction import compact, compact_all
from service.storage.compaction_policy import TOP_LEVEL, has_work
from service.storage.fragments import is_companion
from service.storage.store import Store
from service.storage.tombstones import Tombstone, live
from service.storage.wal import SegmentWriter, encode_frame, lock_path, segment_path

BASE = 1_705_312_800_000  # 2024-01-15T10:00:00Z
DAY = 86_400_000
USERS = ("a", "b", "c", "d")


def rows(users: tuple[str, ...], seq0: int, minutes: int = 30) -> pl.DataFrame:
    n = len(users) * minutes
    return rows_frame(
        Rows(
            [u for u in users for _ in range(minutes)],
            ["device_a"] * n,
            [BASE + m * 60_000 for _ in users for m in range(minutes)],
            [60.0 + m % 40 for _ in users for m in range(minutes)],
        ),
        range(seq0, seq0 + n),
    )


def new_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "data", "w1", 5)
    store.ensure_layout()
    return store


def tombstone(store: Store, user_id: str, before: int) -> None:
    store.manifest.commit(tombstones=lambda s: (*s.tombstones, Tombstone(user_id, before, 0.0)))


def all_rows(store: Store) -> pl.DataFrame:
    """Every row of every Parquet day file in ``fragments/``, listed or not."""
    paths = [p for p in store.fragment_dir.glob("frag-*.parquet") if not is_companion(p.name)]
    return pl.read_parquet(paths, schema=ROW_SCHEMA) if paths else pl.DataFrame(schema=ROW_SCHEMA)


def listed_rows(store: Store, user: str) -> pl.DataFrame:
    """Rows of ``user`` in the listed day files, sorted."""
    paths = [store.fragment_dir / f.name for f in store.manifest.read().fragments]
    found = pl.read_parquet(paths, schema=ROW_SCHEMA).filter(pl.col("user_id") == user)
    return found.sort(pl.all())


def counts(reader: Reader, user: str) -> int:
    found = reader.run(Query("heart_rate", user, BASE, BASE + DAY))
    return 0 if found is None else int(found["count"].sum())


def test_the_reader_drops_rows_under_a_tombstone_from_every_source(tmp_path: Path) -> None:
    store, buffer = new_store(tmp_path), Buffer()
    store.publish({"heart_rate": rows(("u", "v"), 0, 10)})  # seq 0..19: u has 0..9
    buffer.add("heart_rate", Rows(["u"] * 3, ["device_a"] * 3, [BASE] * 3, [70.0] * 3), 100)
    reader = Reader(Settings(data_dir=store.root), store, buffer)
    assert counts(reader, "u") == 10  # the buffer's three rows share the first identity
    tombstone(store, "u", 5)
    assert counts(reader, "u") == 6  # seq 5..9 from the file, and the buffer's
    tombstone(store, "u", 200)
    assert counts(reader, "u") == 0
    assert counts(reader, "v") == 10


def test_the_reader_skips_rollups_while_a_tombstone_hides_rows(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.publish({"heart_rate": rows(USERS, 0)})
    compact_all(store)
    assert all(f.rollup for f in store.manifest.read().fragments)
    reader = Reader(Settings(data_dir=store.root), store, Buffer())
    assert counts(reader, "b") == 30
    tombstone(store, "b", 10**18)
    assert counts(reader, "b") == 0


def test_finish_rewrites_every_file_holding_the_user(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    for i in range(3):
        store.publish({"heart_rate": rows(USERS, i * 1000), "steps": rows(("b",), i * 1000 + 500)})
    # one level-2 file per user range: "b" alone in one of them
    compact(store, force=True, grace_s=0.0, max_rows=90)
    store.publish({"heart_rate": rows(("b", "c"), 9000, 5)})  # and a level-0 file
    level2 = [f for f in store.manifest.read().fragments if f.level == TOP_LEVEL]
    assert any((f.user_lo, f.user_hi) == ("b", "c") for f in level2)
    others = [listed_rows(store, user) for user in ("a", "c", "d")]

    erasure.begin(store, "b")
    assert has_work(store)  # a compaction pass would finish it
    progress = erasure.finish(store)
    assert progress is not None
    assert progress.done
    assert progress.files_rewritten >= 3
    assert all_rows(store).filter(pl.col("user_id") == "b").height == 0
    assert all(listed_rows(store, u).equals(rows) for u, rows in zip("acd", others, strict=True))
    assert verify(store) == []  # day ranges still tile, rollups match their day files
    assert [t.done is not None for t in store.manifest.read().tombstones] == [True]


def test_finish_waits_for_a_live_workers_wal(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.publish({"heart_rate": rows(("u",), 0, 5)})
    owner = FileLock(lock_path(store.wal_dir, "w2"))  # a live worker with u's row unflushed
    owner.acquire()
    segment = segment_path(store.wal_dir, "w2", 1)
    writer = SegmentWriter(segment)
    writer.append(encode_frame("heart_rate", 10, Rows(["u"], ["d"], [BASE], [70.0])))
    erasure.begin(store, "u")
    progress = erasure.finish(store)
    assert progress is not None
    assert not progress.done  # the file is clean, the WAL is not
    assert all_rows(store).filter(pl.col("user_id") == "u").height == 0
    assert any("wal" in p for p in verify(store))
    writer.close()
    segment.unlink()  # its owner flushed: the flush leaves u's row out
    owner.release()
    assert erasure.finish(store) == erasure.Progress(done=True)
    assert verify(store) == []


def test_a_done_tombstone_goes_after_its_keeping_time(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.publish({"heart_rate": rows(("u",), 0, 5)})
    erasure.begin(store, "u")
    assert erasure.finish(store) is not None
    assert len(store.manifest.read().tombstones) == 1  # kept: it still hides in-flight rows
    assert erasure.finish(store, keep_s=0.0) == erasure.Progress(done=True)
    assert store.manifest.read().tombstones == ()


def test_verify_reports_erased_rows_left_in_a_file(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.publish({"heart_rate": rows(("u", "v"), 0, 5)})
    erasure.begin(store, "u")
    assert [p for p in verify(store) if "erased rows of user 'u'" in p]


def test_publish_and_compaction_leave_erased_rows_out(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    tombstone(store, "u", 100)
    store.publish({"heart_rate": rows(("u", "v"), 50, 20)})  # u's seq 50..69: all erased
    assert all_rows(store).filter(pl.col("user_id") == "u").height == 0
    tombstone(store, "v", 10**18)
    compact_all(store)  # its inputs are only retired; what it wrote holds no v
    assert store.manifest.read().fragments == ()


def test_the_user_list_drops_an_erased_user_until_it_sends_again(tmp_path: Path) -> None:
    store, buffer = new_store(tmp_path), Buffer()
    store.publish({"heart_rate": rows(USERS, 0, 2)})
    index = UserIndex(store, buffer.snapshot)
    assert index.page(Page(2)).users == ["a", "b"]
    erasure.begin(store, "a")
    assert index.page(Page(2)).users == ["b", "c"]
    buffer.add("steps", Rows(["a"], ["d"], [BASE], [1.0]), 2**62)  # sent after the erase
    assert index.page(Page(2)).users == ["a", "b"]


def test_live_keeps_rows_at_or_after_the_cut_off() -> None:
    frame = rows(("u", "v"), 0, 3)  # u: seq 0..2, v: 3..5
    kept = live(frame, [Tombstone("u", 2, 0.0), Tombstone("v", 4, 0.0)])
    assert kept["seq"].to_list() == [2, 4, 5]


def test_readings_acknowledged_after_an_erase_began_are_kept(tmp_path: Path) -> None:
    """An erase that begins while a group commit writes: the readings it then acknowledges
    carry sequences below the cut-off, and are written again above it."""
    from service.ingest.commit import GroupCommitter
    from tests.unit.test_write_path import BASE, make, rows

    async def scenario() -> None:
        ingestor, store = make(tmp_path)
        await ingestor.start()
        await ingestor.submit("heart_rate", rows(3, "gone"))  # before the erase: erased
        real_write = GroupCommitter._write_group
        began = []

        async def write_then_erase(self: GroupCommitter, data: bytes) -> object:
            error = await real_write(self, data)
            if not began:  # the erase begins after the group's sequences were taken
                began.append(erasure.begin(store, "late"))
            return error

        GroupCommitter._write_group = write_then_erase  # type: ignore[method-assign]
        try:
            await ingestor.submit("heart_rate", rows(2, "late", start=10))
        finally:
            GroupCommitter._write_group = real_write  # type: ignore[method-assign]
        erasure.begin(store, "gone")
        reader = Reader(ingestor._settings, store, ingestor.buffer)
        kept = reader.run(Query("heart_rate", "late", BASE, BASE + 3_600_000))
        assert kept is not None
        assert int(kept["count"].sum()) == 2
        assert reader.run(Query("heart_rate", "gone", BASE, BASE + 3_600_000)) is None
        await ingestor.stop()

    asyncio.run(scenario())
