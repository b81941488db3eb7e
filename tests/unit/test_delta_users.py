"""The user list on the Delta store: every machine's users in the shared table, this
machine's unflushed ones, followed per table version without reading every file again."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

from service.query.users import Page, UserIndex, UserPage
from service.schema import rows_frame
from service.storage import erasure
from service.storage.delta import DeltaStore
from service.storage.delta_compaction import compact
from tests.unit.test_delta_store import store_at
from tests.unit.test_write_path import rows


def frames(metric: str, *users: str, seq: int = 1) -> dict[str, pl.DataFrame]:
    parts = [
        rows_frame(rows(2, user, i * 10), [seq + 2 * i, seq + 2 * i + 1])
        for i, user in enumerate(users)
    ]
    return {metric: pl.concat(parts)}


def counted(store: DeltaStore, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The file lists this store's table reads are asked for, from now on."""
    seen: list[list[str]] = []
    scan = store.scan_table

    def spy(uris: list[str]) -> pl.LazyFrame:
        seen.append(list(uris))
        return scan(uris)

    monkeypatch.setattr(store, "scan_table", spy)
    return seen


@pytest.fixture
def machines(tmp_path: Path) -> tuple[DeltaStore, DeltaStore]:
    table = tmp_path / "table"
    return store_at(tmp_path / "m1", table), store_at(tmp_path / "m2", table)


def test_every_machines_users_are_listed_with_this_ones_unflushed(
    machines: tuple[DeltaStore, DeltaStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = machines
    reads = counted(one, monkeypatch)
    buffered = frames("heart_rate", "z", seq=500)["heart_rate"]
    index = UserIndex(one, lambda metric: [buffered] if metric == "heart_rate" else [])
    one.publish(frames("heart_rate", "a", "b"))
    two.publish(frames("heart_rate", "c"))
    two.publish(frames("steps", "d", seq=100))  # every metric
    assert index.page(Page(10)) == UserPage(["a", "b", "c", "d", "z"], None)
    assert index.page(Page(2)) == UserPage(["a", "b"], "b")
    assert index.page(Page(2, after="b")) == UserPage(["c", "d"], "d")
    assert index.page(Page(10, prefix="c")) == UserPage(["c"], None)
    assert len(reads) == 3  # each file's ids once, whatever the pages asked
    two.publish(frames("calories", "e", seq=200))
    assert index.page(Page(10, after="d")) == UserPage(["e", "z"], None)
    assert len(reads) == 4  # the new version: its one new file only


def test_a_compaction_costs_a_read_of_its_output_and_an_erase_unlists_the_user(
    machines: tuple[DeltaStore, DeltaStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = machines
    reads = counted(one, monkeypatch)
    index = UserIndex(one, lambda metric: [])
    one.publish(frames("heart_rate", "a", "b"))
    two.publish(frames("heart_rate", "b", "c", seq=10))
    assert index.page(Page(10)).users == ["a", "b", "c"]
    assert len(reads) == 2
    compact(one.uri, None, min_files=2)
    assert index.page(Page(10)).users == ["a", "b", "c"]
    assert len(reads) == 3  # the compacted file only: its users were all known
    erasure.begin(two, "b")  # erased on the other machine, imported here at upkeep
    one.sync_erasures()
    assert index.page(Page(10)).users == ["a", "c"]  # hidden while its rows remain
    progress = erasure.finish(two)
    assert progress is not None
    assert progress.done
    assert index.page(Page(10)).users == ["a", "c"]  # and gone from the table
    one.publish(frames("heart_rate", "b", seq=time.time_ns()))  # sent after the erase
    assert index.page(Page(10)).users == ["a", "b", "c"]
