"""Retention on the shared table: days past raw retention lose their raw files, keep their
rollups until rollup retention, and still answer from them, as on the local store."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from service import maintenance
from service.config import Settings
from service.errors import InvalidInput
from service.ingest.buffer import Buffer
from service.query.buckets import Shape
from service.query.reader import Reader
from service.query.series import json_body
from service.query.sources import Query
from service.schema import DAY_MS
from service.storage import delta_erasure, erasure
from service.storage.delta import DeltaStore
from service.storage.delta_compaction import compact
from service.storage.delta_rollups import STANDALONE, rollups_uri
from tests.unit.test_delta_store import store_at
from tests.unit.test_retention import readings

TODAY = int(time.time() * 1000) // DAY_MS * DAY_MS
OLD = TODAY - 40 * DAY_MS  # past a 30-day rollup retention
MIDDLE = TODAY - 15 * DAY_MS  # past a 10-day raw retention, within the rollups'
RECENT = TODAY - 2 * DAY_MS
STATS = ("min", "max", "count")


@pytest.fixture
def store(tmp_path: Path) -> DeltaStore:
    """Old, middle and recent days, each in three appends with repeated identities."""
    rng = random.Random(7)
    store = store_at(tmp_path / "m1", tmp_path / "table")
    seq = 1
    for day in (OLD, MIDDLE, RECENT):
        for _ in range(3):
            store.publish({"heart_rate": readings(rng, day, 400, seq)})
            seq += 1000
    return store


def answer(store: DeltaStore, day: int, user: str = "u", interval: str = "1h") -> dict:
    reader = Reader(Settings(data_dir=store.root), store, Buffer())
    shape = Shape(interval, "UTC", STATS)
    q = Query("heart_rate", user, day, day + DAY_MS, slot=shape.slot, extremes=True)
    body = json_body(reader, q, shape)
    return {} if body is None else json.loads(body)


def run(store: DeltaStore, raw: int = 10, rolled: int = 30) -> str:
    return str(
        compact(store.uri, None, min_files=99, retention_days=raw, rollup_retention_days=rolled)
    )


def days(uri: str) -> list[int]:
    found = pl.scan_delta(uri).select(pl.col("day").unique()).collect()["day"]
    return sorted(d.toordinal() for d in found)


def day_of(ms: int) -> int:
    return (ms // DAY_MS) + 719_163  # the proleptic ordinal of an epoch day


def test_days_past_raw_retention_answer_from_their_rollups(store: DeltaStore) -> None:
    before = {day: answer(store, day) for day in (OLD, MIDDLE, RECENT)}
    other = answer(store, MIDDLE, "v")
    assert all(before.values())
    report = run(store)
    assert "retention dropped 4 raw files" in report  # the old day's 3, the middle day's 1
    assert days(store.uri) == [day_of(RECENT)]
    assert days(rollups_uri(store.uri)) == [day_of(MIDDLE), day_of(RECENT)]
    assert answer(store, MIDDLE) == before[MIDDLE]  # mean, min, max, count intact
    assert answer(store, MIDDLE, "v") == other
    assert answer(store, RECENT) == before[RECENT]
    assert answer(store, OLD) == {}  # past rollup retention: gone
    # a range across the boundary: rollups up to it, the table after it
    reader = Reader(Settings(data_dir=store.root), store, Buffer())
    q = Query("heart_rate", "u", MIDDLE, RECENT + DAY_MS, extremes=True)
    across = json.loads(json_body(reader, q, Shape("1d", "UTC", STATS)) or b"{}")
    assert [b["count"] for b in across["data"]] == [
        sum(b["count"] for b in before[day]["data"]) for day in (MIDDLE, RECENT)
    ]
    with pytest.raises(InvalidInput, match="1s buckets need raw readings"):
        answer(store, MIDDLE, interval="1s")
    assert run(store) == "nothing to compact"  # the rollups are final: never rewritten


def test_rows_reaching_a_day_past_retention_later_are_ignored_then_dropped(
    store: DeltaStore,
) -> None:
    run(store)
    before = answer(store, MIDDLE)
    late = readings(random.Random(3), MIDDLE, 50, 90_000, user="u")
    store.publish({"heart_rate": late.with_columns(pl.lit(220.0).alias("value"))})
    assert answer(store, MIDDLE) == before  # the rollup alone answers for its day
    report = run(store)
    assert "retention dropped 1 raw files" in report
    assert "compacted" not in report  # the standalone rollup is not rebuilt from them
    assert days(store.uri) == [day_of(RECENT)]
    assert answer(store, MIDDLE) == before


def test_an_expiring_day_without_a_current_rollup_is_rolled_up_before_its_files_go(
    store: DeltaStore,
) -> None:
    run(store, raw=0, rolled=0)  # every day compacted and rolled up, nothing dropped
    more = readings(random.Random(5), MIDDLE, 100, 50_000)
    store.publish({"heart_rate": more})  # the middle day's rollup is no longer current
    before = answer(store, MIDDLE)
    report = run(store)
    assert "compacted heart_rate/" in report
    assert answer(store, MIDDLE) == before
    rollups = pl.scan_delta(rollups_uri(store.uri)).collect()
    middle = rollups.filter(pl.col("day").dt.epoch("d") == MIDDLE // DAY_MS)
    assert set(middle["files"]) == {STANDALONE}


def test_an_erase_removes_the_user_from_the_standalone_rollups(store: DeltaStore) -> None:
    run(store)
    assert answer(store, MIDDLE, "v")
    erasure.begin(store, "v")
    progress = erasure.finish(store)
    assert progress is not None
    assert progress.done
    assert answer(store, MIDDLE, "v") == {}
    # the recent day's rollup went stale with its rewritten files; the next pass rolls it again
    alone = pl.scan_delta(rollups_uri(store.uri)).filter(pl.col("files") == STANDALONE).collect()
    assert set(alone["user_id"]) == {"u"}
    assert answer(store, MIDDLE, "u")
    assert delta_erasure.leftovers(store.uri, None) == []


def test_the_maintenance_command_passes_both_retentions(
    store: DeltaStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HR_STORE", "delta")
    monkeypatch.setenv("HR_TABLE_URI", store.uri)
    monkeypatch.setenv("HR_RETENTION_DAYS", "10")
    monkeypatch.setenv("HR_ROLLUP_RETENTION_DAYS", "30")
    assert maintenance.main(["compact-table", "--min-files", "99"]) == 0
    out = capsys.readouterr().out
    assert "retention dropped 4 raw files" in out
    assert days(rollups_uri(store.uri)) == [day_of(MIDDLE), day_of(RECENT)]
    monkeypatch.setenv("HR_ROLLUP_RETENTION_DAYS", "12")
    assert maintenance.main(["compact-table"]) == 0
    assert "rollup retention dropped 1 files" in capsys.readouterr().out
    assert days(rollups_uri(store.uri)) == [day_of(RECENT)]
    assert DeltaTable(store.uri).version() > 0
