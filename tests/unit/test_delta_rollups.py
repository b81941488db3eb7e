"""The rollup table of the shared Delta table: one per compacted day, used by minute-slot
queries while the day's files are those it summarises, and the same answers either way."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from service.config import Settings
from service.ingest.buffer import Buffer
from service.query.reader import Query, Reader
from service.query.series import json_body
from service.schema import DAY_MS, rows_frame
from service.storage import delta_rollups, erasure
from service.storage.delta import DeltaStore
from service.storage.delta_compaction import compact
from service.storage.delta_rollups import rollups_uri
from tests.unit.test_delta_store import store_at
from tests.unit.test_write_path import BASE, rows


def load(store: DeltaStore) -> None:
    """Two users over two days in three appends each, a reading sent twice with new values."""
    seq = 1
    for user in ("u", "v"):
        for day in (0, 1):
            for part in range(3):
                n = 150
                start = day * 86_400 + part * 100  # overlapping: identities repeat
                frame = rows_frame(rows(n, user, start), list(range(seq, seq + n)))
                frame = frame.with_columns(pl.col("value") + part)
                store.publish({"heart_rate": frame})
                seq += n


def answers(store: DeltaStore, user: str = "u") -> tuple[dict, dict]:
    """(merged, plain): the partial path's answer and the raw rows' for two days."""
    settings = Settings(data_dir=store.root)
    q = Query("heart_rate", user, BASE, BASE + 2 * DAY_MS)
    found = []
    for merging in (True, False):
        body = json_body(Reader(settings, store, Buffer(), merging=merging), q)
        found.append(json.loads(body) if body is not None else {})
    return found[0], found[1]


def test_a_compacted_day_gets_a_rollup_that_queries_use(tmp_path: Path) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    load(store)
    before = answers(store)
    assert before[0] == before[1]
    report = compact(str(table), None, min_files=2)
    assert len(report.rewritten) == 2
    assert not report.unrolled
    rolled = DeltaTable(rollups_uri(str(table)))
    assert len(rolled.file_uris()) == 2  # one per day
    loose, days = store.table_sources("heart_rate", BASE, BASE + 2 * DAY_MS, "u")
    assert loose is None
    assert len(days) == 2
    assert all(day.rollup["user_id"].unique().to_list() == ["u"] for day in days)
    assert sum(day.rollup["count"].sum() for day in days) == 2 * 350  # identities, once
    assert answers(store) == before


def test_rows_appended_to_a_rolled_up_day_are_read_beside_its_rollup(tmp_path: Path) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    load(store)
    compact(str(table), None, min_files=2)
    late = rows_frame(rows(30, "u", 320), list(range(10_000, 10_030)))  # 20 repeated, 10 new
    store.publish({"heart_rate": late.with_columns(pl.col("value") + 40)})
    loose, days = store.table_sources("heart_rate", BASE, BASE + 2 * DAY_MS, "u")
    assert loose is not None
    assert len(days) == 2
    merged, plain = answers(store)
    assert merged == plain
    assert merged["count"] == plain["count"]


def test_an_erase_leaves_the_rollup_stale_and_the_day_is_read_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delta_rollups, "REFRESH_S", 0.0)  # no query's read to reuse here
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    load(store)
    compact(str(table), None, min_files=2)
    erasure.begin(store, "v")
    progress = erasure.finish(store)
    assert progress is not None
    assert progress.done
    loose, days = store.table_sources("heart_rate", BASE, BASE + 2 * DAY_MS, "u")
    assert days == []  # the rewritten files are not those the rollup names
    assert loose is not None
    assert answers(store, "v") == ({}, {})
    merged, plain = answers(store)
    assert merged == plain
    assert merged["count"] > 0
    compact(str(table), None, min_files=1)  # the next rewrite rolls the days up again
    assert len(store.table_sources("heart_rate", BASE, BASE + 2 * DAY_MS, "u")[1]) == 2
    assert answers(store)[0] == plain
