"""The user index: its union and per-file cache answer like reading every row."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
from hypothesis import given

import service.query.users as users_module
from service.query.rollups import frame_bytes
from service.query.user_ids import FileUsers, merged
from service.query.users import Page, UserIndex
from service.schema import HEART_RATE, Rows, rows_frame
from service.storage.quarantine import quarantined
from service.storage.store import Store

ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=4)


def frame(*users: str) -> pl.DataFrame:
    n = len(users)
    return rows_frame(Rows(list(users), ["d"] * n, [1_705_312_800_000] * n, [70.0] * n), range(n))


def store_with(tmp_path: Path, *files: tuple[str, ...]) -> Store:
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    for users in files:
        store.publish({"heart_rate": frame(*users)})
    return store


@given(st.lists(ids), st.lists(st.lists(ids), max_size=4))
def test_merged_is_the_sorted_distinct_union(union: list[str], parts: list[list[str]]) -> None:
    base = pl.Series(sorted(set(union)), dtype=pl.String).sort()
    series = [pl.Series(p, dtype=pl.String) for p in parts]
    want = sorted(set(union).union(*parts))
    assert merged(base, series).to_list() == want
    assert merged(None, [base, *series]).to_list() == want


def test_file_ids_are_kept_within_the_budget(tmp_path: Path) -> None:
    store = store_with(tmp_path, ("b", "a", "b"), ("c", "d"), ("e", "f"))
    names = [f.name for f in store.manifest.read().fragments]
    one = frame_bytes(FileUsers(store.fragment_dir, 1 << 20).ids(names[0]).to_frame())
    cache = FileUsers(store.fragment_dir, 2 * one + one // 2)  # room for two files
    assert cache.ids(names[0]).to_list() == ["a", "b"]
    cache.ids(names[1])
    cache.ids(names[0])
    cache.ids(names[2])  # past the budget: the least recently used file goes
    for name in names:
        (store.fragment_dir / name).unlink()
    assert cache.ids(names[0]).to_list() == ["a", "b"]  # from memory
    assert cache.ids(names[2]).to_list() == ["e", "f"]
    with pytest.raises(FileNotFoundError):
        cache.ids(names[1])


def test_a_flush_merges_only_the_new_files(tmp_path: Path) -> None:
    store = store_with(tmp_path, ("a", "c"), ("b",))
    index = UserIndex(store, lambda metric: [], budget_bytes=0)  # no file is kept
    assert index.page(Page(10)).users == ["a", "b", "c"]
    for f in store.manifest.read().fragments:
        (store.fragment_dir / f.name).unlink()  # read again, they would be quarantined
    store.publish({"heart_rate": frame("bb", "d")})
    assert index.page(Page(10)).users == ["a", "b", "bb", "c", "d"]
    assert quarantined(store.root) == {}


def test_unflushed_rows_of_every_metric_count(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(users_module, "METRICS", {"heart_rate": HEART_RATE, "steps": HEART_RATE})
    store = store_with(tmp_path, ("filed",))
    unflushed = {"heart_rate": [frame("hr1"), frame("hr0", "filed")], "steps": [frame("st")]}
    index = UserIndex(store, lambda metric: unflushed[metric])
    assert index.page(Page(10)) == users_module.UserPage(["filed", "hr0", "hr1", "st"], None)
    assert index.page(Page(2, after="filed")).users == ["hr0", "hr1"]
    assert index.page(Page(10, prefix="s")).users == ["st"]


def test_a_compaction_merges_its_output_and_a_lost_user_rebuilds(tmp_path: Path) -> None:
    store = store_with(tmp_path, ("a", "c"), ("b",))
    first, second = store.manifest.read().fragments
    index = UserIndex(store, lambda metric: [], budget_bytes=0)  # every id read from disk
    assert index.page(Page(10)).users == ["a", "b", "c"]
    saved = (store.fragment_dir / first.name).read_bytes()
    (store.fragment_dir / first.name).unlink()  # a rebuild would quarantine it
    output = store.write(frame("b", "bb"), "heart_rate", 1)  # holds every user of ``second``
    store.manifest.commit(add=[output], remove=[second.name], retire=True)
    assert index.page(Page(10)).users == ["a", "b", "bb", "c"]
    assert quarantined(store.root) == {}
    (store.fragment_dir / first.name).write_bytes(saved)
    store.manifest.commit(remove=[output.name], retire=True)  # as retention would
    assert index.page(Page(10)).users == ["a", "c"]
    (late,) = store.publish({"heart_rate": frame("d")})
    assert index.page(Page(10)).users == ["a", "c", "d"]
    store.manifest.commit(remove=[late.name], retire=True)
    (store.fragment_dir / late.name).unlink()  # retired and deleted before the next page
    assert index.page(Page(10)).users == ["a", "c"]


def test_ids_of_files_that_left_the_manifest_leave_the_cache(tmp_path: Path) -> None:
    store = store_with(tmp_path, ("a", "c"), ("b",))
    first, second = store.manifest.read().fragments
    index = UserIndex(store, lambda metric: [])
    assert index.page(Page(10)).users == ["a", "b", "c"]
    output = store.write(frame("a", "b", "c"), "heart_rate", 1)
    store.manifest.commit(add=[output], remove=[first.name, second.name], retire=True)
    assert index.page(Page(10)).users == ["a", "b", "c"]
    for name in (first.name, second.name, output.name):
        (store.fragment_dir / name).unlink()
    assert index._files.ids(output.name).to_list() == ["a", "b", "c"]  # kept: listed
    for name in (first.name, second.name):
        with pytest.raises(FileNotFoundError):
            index._files.ids(name)  # not kept: read from disk again
