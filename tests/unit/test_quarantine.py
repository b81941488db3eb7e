"""An unreadable data file is quarantined, not fatal; what a killed writer left is swept."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import polars as pl
from prometheus_client import REGISTRY

from service.config import Settings
from service.ingest.buffer import Buffer
from service.maintenance import verify
from service.query.reader import Reader
from service.query.series import json_body
from service.query.sources import Query
from service.storage.compaction import compact
from service.storage.compaction_policy import has_work
from service.storage.recovery import replay_orphans
from service.storage.store import Store
from service.storage.wal import SegmentWriter, encode_frame, segment_path
from tests.unit.test_compaction import BASE, DAY, _rows, answers, chunk

HOUR_AGO = time.time() - 3600


def stores(tmp_path: Path, chunks: list[pl.DataFrame], skip: set[int]) -> tuple[Store, Store]:
    """A store with one fragment per chunk, and a reference store without the ``skip`` ones."""
    store, reference = Store(tmp_path / "data", "w1", 5), Store(tmp_path / "ref", "w1", 5)
    for s in (store, reference):
        s.ensure_layout()
    for i, c in enumerate(chunks):
        store.publish({"heart_rate": c})
        if i not in skip:
            reference.publish({"heart_rate": c})
    return store, reference


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def quarantined_total() -> float:
    return REGISTRY.get_sample_value("hr_quarantined_files_total") or 0.0


def listed(store: Store) -> set[str]:
    return {name for f in store.manifest.read().fragments for name in f.files}


def test_a_query_skips_a_truncated_fragment_and_quarantines_it(tmp_path: Path) -> None:
    rng = random.Random(3)
    store, reference = stores(tmp_path, [chunk(rng, i * 1000) for i in range(6)], {2})
    bad = store.manifest.read().fragments[2].name
    truncate(store.fragment_dir / bad)
    counted = quarantined_total()
    # every answer, the first one included, comes from the other files
    assert answers(store, tmp_path) == answers(reference, tmp_path)
    assert quarantined_total() == counted + 1
    assert bad not in listed(store)
    assert not (store.fragment_dir / bad).exists()
    assert (store.root / "quarantine" / bad).exists()
    assert [p.split(":")[0] for p in verify(store)] == [bad]
    assert "quarantined (" in verify(store)[0]


def test_an_unreadable_rollup_costs_only_the_rollup(tmp_path: Path) -> None:
    rng = random.Random(4)
    chunks = [chunk(rng, i * 1000) for i in range(4)]
    store, _ = stores(tmp_path, chunks, set())
    compact(store, force=True, grace_s=3600)
    before = answers(store, tmp_path)
    entry = next(f for f in store.manifest.read().fragments if f.rollup)
    (store.fragment_dir / entry.files[1]).write_bytes(b"PAR1 not really")
    assert answers(store, tmp_path) == before  # the day file, read raw
    kept = next(f for f in store.manifest.read().fragments if f.name == entry.name)
    assert not kept.rollup
    assert [p.split(":")[0] for p in verify(store)] == [entry.files[1]]


def test_a_truncated_day_file_goes_with_its_rollup(tmp_path: Path) -> None:
    rng = random.Random(5)
    chunks = [chunk(rng, i * 1000) for i in range(4)]
    store, _ = stores(tmp_path, chunks, set())
    compact(store, force=True, grace_s=3600)
    day = min(store.manifest.read().fragments, key=lambda f: f.min_ts)
    lost = (pl.col("ts").dt.epoch("ms") // DAY) == day.min_ts // DAY
    reference = Store(tmp_path / "without", "w1", 5)
    reference.ensure_layout()
    reference.publish({"heart_rate": pl.concat(chunks).filter(~lost)})
    truncate(store.fragment_dir / day.name)
    # whole minutes come from the rollup; a range that ends mid-minute, in a minute the day
    # holds readings of, reads the day file
    held = pl.concat(chunks).filter(lost & (pl.col("user_id") == "u1"))["ts"].dt.epoch("ms")
    q = Query("heart_rate", "u1", BASE, int(held.min()) + 1)  # type: ignore[arg-type]
    settings = Settings(data_dir=tmp_path)
    got = json_body(Reader(settings, store, Buffer()), q)
    assert got == json_body(Reader(settings, reference, Buffer()), q)
    assert answers(store, tmp_path) == answers(reference, tmp_path)
    assert sorted(p.name for p in (store.root / "quarantine").iterdir()) == sorted(
        [*day.files, *(f"{name}.reason" for name in day.files)]
    )


def test_a_file_deleted_under_a_query_is_a_retry_not_corruption(tmp_path: Path) -> None:
    rng = random.Random(6)
    store, _ = stores(tmp_path, [chunk(rng, i * 1000) for i in range(5)], set())
    before = answers(store, tmp_path)
    listing = store.fragments
    calls = 0

    def stale_listing(*args: object, **kwargs: object) -> object:
        # the query's manifest read happened; then compaction retires the files it listed
        # and a later pass deletes them before the query scans them
        nonlocal calls
        calls += 1
        found = listing(*args, **kwargs)  # type: ignore[arg-type]
        if calls == 1:
            compact(store, force=True, grace_s=0)
            compact(store, grace_s=0)
            assert not any((store.fragment_dir / f.name).exists() for f in found)
        return found

    store.fragments = stale_listing  # type: ignore[method-assign]
    assert answers(store, tmp_path) == before
    assert not (store.root / "quarantine").exists()
    assert verify(store) == []


def test_compaction_quarantines_an_unreadable_input_and_merges_the_rest(tmp_path: Path) -> None:
    rng = random.Random(7)
    store, reference = stores(tmp_path, [chunk(rng, i * 1000) for i in range(8)], {5})
    bad = store.manifest.read().fragments[5].name
    truncate(store.fragment_dir / bad)
    report = compact(store, min_files=4, grace_s=3600)
    assert report is not None
    assert report.quarantined == 1
    assert report.files_in == 7
    assert {f.level for f in store.manifest.read().fragments} == {1}
    assert answers(store, tmp_path) == answers(reference, tmp_path)
    assert [p.split(":")[0] for p in verify(store)] == [bad]
    report = compact(store, force=True, grace_s=3600)  # and the next passes go on
    assert report is not None
    assert report.quarantined == 0
    assert answers(store, tmp_path) == answers(reference, tmp_path)


def test_rows_still_in_a_wal_survive_the_quarantine_of_their_fragment(tmp_path: Path) -> None:
    rng = random.Random(8)
    chunks = [chunk(rng, i * 1000) for i in range(4)]
    store, reference = stores(tmp_path, chunks, set())
    # a worker died between listing its fragment and deleting the WAL segment behind it
    dead = segment_path(store.wal_dir, "dead", 1)
    writer = SegmentWriter(dead)
    writer.append(encode_frame("heart_rate", int(chunks[3]["seq"][0]), _rows(chunks[3])))
    writer.close()
    truncate(store.fragment_dir / store.manifest.read().fragments[3].name)
    assert answers(store, tmp_path) == answers(reference, tmp_path)
    assert len(list((store.root / "quarantine").glob("*.parquet"))) == 1
    assert replay_orphans(store) == chunks[3].height
    assert not dead.exists()
    compact(store, force=True, grace_s=3600)
    assert answers(store, tmp_path) == answers(reference, tmp_path)


def leftovers(store: Store) -> list[Path]:
    orphan = store.fragment_dir / "frag-dead-000000000001.parquet"
    chunk(random.Random(1), 0).write_parquet(orphan)
    temporary = store.fragment_dir / ".frag-dead-000000000002.parquet.tmp"
    temporary.touch()
    manifest_tmp = store.root / ".manifest.json.12345.tmp"
    manifest_tmp.write_bytes(b"{")
    return [orphan, temporary, manifest_tmp]


def test_compaction_removes_old_unlisted_files_and_only_those(tmp_path: Path) -> None:
    rng = random.Random(9)
    store, _ = stores(tmp_path, [chunk(rng, i * 1000) for i in range(3)], set())
    before = answers(store, tmp_path)
    files = leftovers(store)
    # young: possibly a flush between writing its file and listing it
    assert not has_work(store, min_files=100, grace_s=0)
    report = compact(store, min_files=100, grace_s=0)
    assert report is not None
    assert report.orphans == 0
    assert all(path.exists() for path in files)
    for path in [*files, *store.fragment_dir.iterdir()]:
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    assert has_work(store, min_files=100, grace_s=0)
    report = compact(store, min_files=100, grace_s=0)
    assert report is not None
    assert report.orphans == 3
    assert not any(path.exists() for path in files)
    assert sorted(p.name for p in store.fragment_dir.iterdir()) == sorted(listed(store))
    assert not has_work(store, min_files=100, grace_s=0)
    assert answers(store, tmp_path) == before
    assert verify(store) == []


def test_an_unlisted_file_younger_than_the_grace_period_stays(tmp_path: Path) -> None:
    store, _ = stores(tmp_path, [chunk(random.Random(2), 0)], set())
    files = leftovers(store)
    for path in files:
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    assert not has_work(store, min_files=100, grace_s=7200)
    report = compact(store, min_files=100, grace_s=7200)
    assert report is not None
    assert report.orphans == 0
    assert all(path.exists() for path in files)


def test_a_file_of_another_schema_is_unreadable_too(tmp_path: Path) -> None:
    store, _ = stores(tmp_path, [chunk(random.Random(2), 0)], set())
    entry = store.manifest.read().fragments[0]
    pl.DataFrame({"other": [1]}).write_parquet(store.fragment_dir / entry.name)
    reader = Reader(Settings(data_dir=tmp_path), store, Buffer())
    assert json_body(reader, Query("heart_rate", "u1", BASE, BASE + 3 * DAY)) is None
    assert entry.name not in listed(store)
    assert (store.root / "quarantine" / entry.name).exists()
