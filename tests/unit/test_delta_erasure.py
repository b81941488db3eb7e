"""Erasure and retention on the shared Delta table (local path): the erase deletes the
user's rows from the table, every machine learns of it through the shared tombstones,
late flushes leave the erased rows out, and the table's compaction drops expired days."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from service import maintenance
from service.schema import rows_frame
from service.storage import delta_erasure, erasure
from service.storage.delta_compaction import compact
from service.storage.delta_rollups import rollups_uri
from service.storage.tombstones import Tombstone
from tests.unit.test_delta_store import frames, store_at, table_frame
from tests.unit.test_write_path import rows


def no_unflushed(metric: str) -> list[pl.DataFrame]:
    return []


def users(frame: pl.DataFrame) -> list[str]:
    return sorted(set(frame["user_id"]))


def test_an_erase_deletes_the_users_rows_from_the_table_and_shares_its_tombstone(
    tmp_path: Path,
) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    store.publish(frames(5, user="gone"))
    store.publish(frames(3, first_seq=10, user="kept"))
    tomb = erasure.begin(store, "gone")
    assert erasure.readings_under(store, no_unflushed, tomb) == 5
    progress = erasure.finish(store)
    assert progress is not None
    assert progress.done
    assert progress.rows_removed == 5
    assert progress.files_rewritten >= 1
    assert users(table_frame(store)) == ["kept"]
    handle = delta_erasure.open_shared(str(table), None)
    assert handle is not None
    assert [(t.user_id, t.before) for t in delta_erasure.shared(handle, None)] == [
        ("gone", tomb.before)
    ]
    assert delta_erasure.leftovers(str(table), None) == []


def test_another_machine_imports_the_erasure_and_its_late_flush_leaves_the_rows_out(
    tmp_path: Path,
) -> None:
    table = tmp_path / "table"
    first = store_at(tmp_path / "m1", table)
    second = store_at(tmp_path / "m2", table)
    tomb = erasure.begin(first, "gone")
    second.sync_erasures()
    imported = second.manifest.read().tombstones
    assert [(t.user_id, t.before) for t in imported] == [("gone", tomb.before)]
    second.sync_erasures()  # already listed: nothing changes
    assert second.manifest.read().tombstones == imported
    # the second machine's buffered rows, acknowledged before the erase, flushed after it;
    # one reading acknowledged after the erase began is kept
    late = rows_frame(rows(4, "gone"), [1, 2, 3, tomb.before + 1])
    second.publish({"heart_rate": late})
    assert table_frame(second)["seq"].to_list() == [tomb.before + 1]


def test_a_flush_leaves_out_rows_under_old_shared_tombstones_it_never_imported(
    tmp_path: Path,
) -> None:
    table = tmp_path / "table"
    old = Tombstone("gone", time.time_ns(), time.time() - 7 * 86_400)
    delta_erasure.record(str(table), None, [old])  # an erase of a week ago
    store = store_at(tmp_path / "m1", table)
    store.sync_erasures()
    assert store.manifest.read().tombstones == ()  # too old to list: its erase is done
    store.publish(frames(4, user="gone"))  # a WAL replayed after a long outage
    assert table_frame(store).height == 0


def test_an_erase_cut_short_before_sharing_is_shared_by_the_next_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    store.publish(frames(5, user="gone"))
    monkeypatch.setattr(type(store), "share_erasure", lambda self, tomb: None)
    tomb = erasure.begin(store, "gone")  # as if killed right after the local commit
    assert delta_erasure.open_shared(str(table), None) is None
    monkeypatch.undo()
    assert erasure.finish(store) is not None
    handle = delta_erasure.open_shared(str(table), None)
    assert handle is not None
    assert [t.before for t in delta_erasure.shared(handle, None)] == [tomb.before]
    assert table_frame(store).height == 0


def test_verify_and_the_table_compaction_catch_rows_that_came_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    tomb = erasure.begin(store, "gone")
    # a flush that read the tombstones just before the erase and committed after it
    monkeypatch.setattr(type(store), "shared_erasures", lambda self, max_age_s: ())
    store.manifest.commit(tombstones=lambda current: ())
    store.publish(frames(4, user="gone"))
    store.publish(frames(2, first_seq=10, user="kept"))
    monkeypatch.undo()
    problems = delta_erasure.leftovers(str(table), None)
    assert problems == [f"table {table}: 4 rows of erased user 'gone'"]
    report = compact(str(table), None, min_files=2)
    assert report.erased_rows == 4
    assert users(table_frame(store)) == ["kept"]
    assert delta_erasure.leftovers(str(table), None) == []
    assert table_frame(store)["seq"].max() < tomb.before + 10**12


def test_the_table_compaction_drops_days_past_retention(tmp_path: Path) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    seq = 1
    for days_ago in (0, 2, 3, 10):
        frame = frames(2, first_seq=seq)["heart_rate"]
        ts = today - timedelta(days=days_ago)
        frame = frame.with_columns(pl.lit(ts).cast(frame.schema["ts"]).alias("ts"))
        frame = frame.with_columns(pl.col("ts") + pl.duration(seconds=pl.col("seq")))
        store.publish({"heart_rate": frame})
        seq += 2
    assert len(compact(str(table), None, min_files=99).rewritten) == 4  # each day rolled up
    report = compact(str(table), None, min_files=99, retention_days=2)
    assert report.expired_files == 2  # two days' files; their rollups stay
    kept = pl.scan_delta(str(table)).select("day").unique().collect()["day"].to_list()
    assert sorted(kept) == [today.date() - timedelta(days=2), today.date()]
    rolled = pl.scan_delta(rollups_uri(str(table))).select("day").unique().collect()["day"]
    assert len(rolled) == 4
    assert "retention dropped 2 raw files" in str(report)
    report = compact(str(table), None, min_files=99, retention_days=2, rollup_retention_days=5)
    assert report.expired_rollups == 1  # the day 10 days ago leaves whole
    rolled = pl.scan_delta(rollups_uri(str(table))).select("day").unique().collect()["day"]
    assert today.date() - timedelta(days=10) not in rolled.to_list()


def test_verify_names_erased_rows_left_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table"
    store = store_at(tmp_path / "m1", table)
    store.publish(frames(3, user="gone"))
    delta_erasure.record(str(table), None, [Tombstone("gone", time.time_ns(), time.time())])
    monkeypatch.setenv("HR_DATA_DIR", str(store.root))
    monkeypatch.setenv("HR_STORE", "delta")
    monkeypatch.setenv("HR_TABLE_URI", str(table))
    assert maintenance.main(["verify"]) == 1
    assert "3 rows of erased user 'gone'" in capsys.readouterr().out
    DeltaTable(str(table)).delete("user_id = 'gone'")
    assert maintenance.main(["verify"]) == 0
