"""Compaction and vacuum of the shared table: one sorted file per crowded day, each
reading identity once, nothing lost beside a concurrent append."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from service import maintenance
from service.config import Settings
from service.ingest.buffer import Buffer
from service.query.reader import Reader
from service.query.series import json_body
from service.query.sources import Query
from service.schema import rows_frame
from service.storage.delta_compaction import compact, compact_partition, vacuum
from tests.unit.test_delta_store import frames, store_at, table_frame
from tests.unit.test_write_path import BASE, rows

DAY = date(2024, 1, 15)  # the day of BASE


def day_files(table: Path) -> list[str]:
    where = [("metric", "=", "heart_rate"), ("day", "=", DAY.isoformat())]
    return DeltaTable(str(table)).file_uris(file_pruning_predicate=where)


def answer(store) -> dict:
    reader = Reader(Settings(data_dir=store.root), store, Buffer())
    body = json_body(reader, Query("heart_rate", "u", BASE, BASE + 3_600_000))
    assert body is not None
    return json.loads(body)


def test_a_crowded_day_becomes_one_sorted_file_with_each_reading_once(tmp_path: Path) -> None:
    table = tmp_path / "table"
    one, two = store_at(tmp_path / "m1", table), store_at(tmp_path / "m2", table)
    one.publish(frames(5, user="u"))
    two.publish(frames(5, user="a"))
    newer = rows(2, "u")
    newer.value = [99.0, 98.0]  # the same readings sent again: the later value wins
    one.publish({"heart_rate": rows_frame(newer, [100, 101])})
    before = answer(one)
    report = compact(str(table), None, min_files=3)
    assert report.rewritten == ["heart_rate/2024-01-15: 3 files -> 10 rows"]
    assert len(day_files(table)) == 1
    got = table_frame(one)
    assert got.height == 10
    assert got.select("user_id", "ts").equals(got.select("user_id", "ts").sort("user_id", "ts"))
    assert got.filter(pl.col("seq") >= 100)["value"].to_list() == [99.0, 98.0]
    assert answer(one) == answer(two) == before
    version = DeltaTable(str(table)).transaction_version(one.app_id("w1"))
    assert version == 101  # the transactions outlive the rewrite: replays stay exact


def test_a_day_with_few_files_is_rewritten_once_for_its_rollup_then_left_alone(
    tmp_path: Path,
) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    store.publish(frames(5))
    first = str(compact(str(tmp_path / "table"), None, min_files=2))
    assert first == "compacted heart_rate/2024-01-15: 1 files -> 5 rows"
    assert str(compact(str(tmp_path / "table"), None, min_files=2)) == "nothing to compact"
    assert len(day_files(tmp_path / "table")) == 1


def test_an_append_during_a_rewrite_fails_the_rewrite_and_loses_nothing(tmp_path: Path) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    store.publish(frames(5))
    store.publish(frames(5, first_seq=6, start=5))
    snapshot = DeltaTable(str(table))
    store.publish(frames(5, first_seq=11, start=10))  # another machine's flush meanwhile
    with pytest.raises(CommitFailedError):
        compact_partition(snapshot, None, "heart_rate", DAY)
    assert sorted(table_frame(store)["seq"]) == list(range(1, 16))


def test_vacuum_keeps_at_least_a_day(tmp_path: Path) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    store.publish(frames(5))
    store.publish(frames(5, first_seq=6, start=5))
    compact(str(tmp_path / "table"), None, min_files=2)
    with pytest.raises(ValueError, match="below 24 h"):
        vacuum(str(tmp_path / "table"), None, 1)
    assert vacuum(str(tmp_path / "table"), None, 24) == []  # replaced just now: kept
    assert table_frame(store).height == 10


def test_the_maintenance_command_compacts_the_configured_table(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    store.publish(frames(5))
    store.publish(frames(5, first_seq=6, start=5))
    monkeypatch.setenv("HR_STORE", "delta")
    monkeypatch.setenv("HR_TABLE_URI", str(tmp_path / "table"))
    assert maintenance.main(["compact-table", "--min-files", "2", "--vacuum-hours", "48"]) == 0
    out = capsys.readouterr().out
    assert "compacted heart_rate/2024-01-15: 2 files -> 10 rows" in out
    assert "vacuum removed 0 files" in out
    assert maintenance.main(["compact-table", "--vacuum-hours", "2"]) == 2
    monkeypatch.setenv("HR_STORE", "local")
    assert maintenance.main(["compact-table"]) == 2
    assert "needs HR_STORE=delta" in capsys.readouterr().err
