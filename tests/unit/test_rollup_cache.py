"""The rollup cache answers like the file and keeps within its byte budget."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from service.query.rollups import ByUser, RollupCache, frame_bytes
from service.schema import ROLLUP_SCHEMA


def write(directory: Path, name: str, users: list[str], minutes: int) -> pl.DataFrame:
    start = datetime(2024, 1, 15, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "user_id": [u for u in sorted(users) for _ in range(minutes)],
            "device_id": "device_a",
            "minute": [
                start.replace(hour=m // 60, minute=m % 60) for _ in users for m in range(minutes)
            ],
            "sum": 70.0,
            "count": 1,
            "min": 70.0,
            "max": 70.0,
        },
        schema=ROLLUP_SCHEMA,
    )
    frame.write_parquet(directory / name)
    return frame


def test_user_rows_are_the_users_rows_of_the_file(tmp_path: Path) -> None:
    frame = write(tmp_path, "a.rollup.parquet", ["u1", "u10", "u2", "u3"], 30)
    cache = RollupCache(tmp_path, 64 * 1024 * 1024)
    for user in ("u1", "u10", "u2", "u3", "u0", "u4", ""):
        want = frame.filter(pl.col("user_id") == user)
        assert cache.user_rows("a.rollup.parquet", user).equals(want)


def test_the_least_recently_used_files_leave_past_the_budget(tmp_path: Path) -> None:
    names = [f"{i}.rollup.parquet" for i in range(4)]
    for name in names:
        write(tmp_path, name, ["u1", "u2"], 600)
    one = ByUser(pl.read_parquet(tmp_path / names[0])).size
    cache = RollupCache(tmp_path, 2 * one + one // 2)  # room for two files
    for name in names:
        cache.user_rows(name, "u1")
    (tmp_path / names[0]).unlink()  # gone from the cache too: reading it again fails
    (tmp_path / names[3]).unlink()  # still cached: answered from memory
    assert cache.user_rows(names[3], "u2").height == 600
    with pytest.raises(FileNotFoundError):
        cache.user_rows(names[0], "u1")  # evicted: read from disk again


def counting(calls: list[str]):
    def read(path: Path) -> pl.DataFrame:
        calls.append(path.name)
        return pl.read_parquet(path, schema=ROLLUP_SCHEMA)

    return read


def test_a_query_over_more_files_than_fit_keeps_those_that_fit(tmp_path: Path) -> None:
    names = [f"{i}.rollup.parquet" for i in range(5)]
    frames = {name: write(tmp_path, name, ["u1", "u2"], 600) for name in names}
    one = ByUser(frames[names[0]]).size
    reads: list[str] = []
    cache = RollupCache(tmp_path, 3 * one + one // 2, counting(reads))  # room for three
    for _ in range(3):  # the same query again and again, a dashboard's refresh
        found = cache.files_rows(names, "u2")
        assert [
            f.equals(frames[n].filter(pl.col("user_id") == "u2"))
            for n, f in zip(names, found, strict=True)
        ] == [True] * 5
    # the first query read every file and kept three; each later one read only the other
    # two (least recently used eviction would read all five every time: each file would
    # push out the one the query needs next)
    assert len(reads) == 5 + 2 + 2
    assert reads[5:] == names[3:] * 2
    reads.clear()
    cache.files_rows(names[3:], "u1")  # another query: its files push out older ones
    cache.files_rows(names[3:], "u1")
    assert reads == names[3:]


def test_files_the_manifest_no_longer_lists_leave_the_cache(tmp_path: Path) -> None:
    names = [f"{i}.rollup.parquet" for i in range(3)]
    for name in names:
        write(tmp_path, name, ["u1"], 60)
    cache = RollupCache(tmp_path, 64 * 1024 * 1024)
    for name in names:
        cache.user_rows(name, "u1")
    cache.keep({names[1], "other.parquet"})  # the others were retired by a compaction
    for name in names:
        (tmp_path / name).unlink()
    assert cache.user_rows(names[1], "u1").height == 60  # still from memory
    for name in (names[0], names[2]):
        with pytest.raises(FileNotFoundError):
            cache.user_rows(name, "u1")


def test_a_files_size_counts_its_columns_and_its_users_index(tmp_path: Path) -> None:
    # a fragment's partials can hold one row per user: the per-user index then weighs as
    # much as the data, and a frame of few rows more than its ``estimated_size``
    users = [f"user-{i:05d}" for i in range(2_000)]
    frame = write(tmp_path, "a.rollup.parquet", users, 1)
    loaded = ByUser(frame)
    assert frame_bytes(frame) >= frame.estimated_size() + 700 * frame.width
    # each user's string, its place in the list and its two numbers
    assert loaded.size >= frame_bytes(frame) + sum(map(sys.getsizeof, users)) + 24 * len(users)
    cache = RollupCache(tmp_path, loaded.size - 1)  # over the budget alone: not kept
    cache.user_rows("a.rollup.parquet", users[0])
    (tmp_path / "a.rollup.parquet").unlink()
    with pytest.raises(FileNotFoundError):
        cache.user_rows("a.rollup.parquet", users[0])


def test_the_users_index_finds_each_users_rows_and_shares_their_strings(
    tmp_path: Path,
) -> None:
    users = ["b", "a", "é", "user-10", "user-9", "Z", "a b"]
    first = ByUser(write(tmp_path, "a.rollup.parquet", users, 3))
    again = ByUser(write(tmp_path, "b.rollup.parquet", list(reversed(users)), 2))
    for user in users:
        want = first.frame.filter(pl.col("user_id") == user)
        assert want.height == 3
        assert first.user_rows(user).equals(want)
        assert first.user_rows(user, copy=True).equals(want)
        assert again.user_rows(user).height == 2
    for absent in ("", "a0", "user-1", "zz", "\uffff"):  # before, between and after them
        assert first.user_rows(absent).height == 0
    # a user listed by both files is one string in memory, not one per file
    assert all(x is y for x, y in zip(first.users, again.users, strict=True))


def test_a_file_read_for_a_query_gives_a_copy_a_cached_one_a_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a slice keeps its whole frame alive: one from a file just read would keep it after
    # the cache evicts it, for as long as the query runs
    frame = write(tmp_path, "a.rollup.parquet", ["u1", "u2", "u3"], 30)
    copies: list[bool] = []
    original = ByUser.user_rows

    def noted(self: ByUser, user_id: str, *, copy: bool = False) -> pl.DataFrame:
        copies.append(copy)
        return original(self, user_id, copy=copy)

    monkeypatch.setattr(ByUser, "user_rows", noted)
    cache = RollupCache(tmp_path, 64 * 1024 * 1024)
    for user in ("u2", "u2", "u0"):
        want = frame.filter(pl.col("user_id") == user)
        assert cache.user_rows("a.rollup.parquet", user).equals(want)
    assert copies == [True, False, False]
    nothing_kept = RollupCache(tmp_path, 0)
    for user in ("u3", "u3", "u0"):
        want = frame.filter(pl.col("user_id") == user)
        assert nothing_kept.user_rows("a.rollup.parquet", user).equals(want)
    assert copies[3:] == [True, True, True]
