"""Retention: old days lose their raw files, keep their rollups, and still answer."""

from __future__ import annotations

import random
import time
from pathlib import Path

import polars as pl
import pytest

from service.backup import backup
from service.config import ConfigError, Settings
from service.errors import InvalidInput
from service.ingest.buffer import Buffer
from service.maintenance import verify
from service.query.buckets import Shape
from service.query.reader import Reader
from service.query.series import series
from service.query.sources import Query
from service.query.summary import summary
from service.schema import DAY_MS, ROW_SCHEMA
from service.storage.compaction import compact
from service.storage.retention import Retention, has_work
from service.storage.store import Store

TODAY = int(time.time() * 1000) // DAY_MS * DAY_MS
OLD = TODAY - 40 * DAY_MS  # past a 10-day raw retention
MIDDLE = TODAY - 15 * DAY_MS
RECENT = TODAY - 2 * DAY_MS
STATS = ("min", "max", "count")


def readings(rng: random.Random, day: int, n: int, seq0: int, user: str = "") -> pl.DataFrame:
    """``n`` readings of users u and v (or all of ``user``) within the first 6 h of ``day``."""
    return pl.DataFrame(
        {
            "user_id": [user or rng.choice(["u", "v"]) for _ in range(n)],
            "device_id": [rng.choice(["device_a", "device_b", "ring"]) for _ in range(n)],
            "ts": [day + rng.randrange(0, 6 * 3_600_000, 1_500) for _ in range(n)],
            "value": [float(rng.randint(40, 180)) for _ in range(n)],
            "seq": range(seq0, seq0 + n),
        },
        schema=ROW_SCHEMA,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Old, middle and recent days; each old day half compacted, half in lower levels."""
    rng = random.Random(7)
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    seq = 0
    for rounds in range(2):
        for day in (OLD, OLD + DAY_MS, MIDDLE, RECENT):
            for _ in range(3):
                store.publish({"heart_rate": readings(rng, day, 400, seq)})
                seq += 1000
        if rounds == 0:
            assert compact(store, force=True, grace_s=3600) is not None
    return store


def reader(store: Store) -> Reader:
    return Reader(Settings(data_dir=store.root), store, Buffer())


def answers(store: Store) -> list[object]:
    """Series at 1m and 1d (with statistics) and summaries over old and mixed ranges."""
    r = reader(store)
    out: list[object] = []
    for start, end in [(OLD, OLD + 2 * DAY_MS), (OLD + 3_600_000, TODAY), (MIDDLE, TODAY)]:
        for user in ("u", "v"):
            for interval in ("1m", "1d"):
                for device in (None, "ring"):
                    q = Query("heart_rate", user, start, end, device, extremes=True)
                    frame = series(r, q, Shape(interval, "UTC", STATS))
                    out.append(None if frame is None else frame.to_dicts())
            if end - start <= 31 * DAY_MS:
                out.append(summary(r, user, start, end, "UTC"))
    return out


def test_old_days_answer_from_rollups_as_before(store: Store) -> None:
    before = answers(store)
    retention = Retention(10)
    assert has_work(store.manifest.read(), retention)
    report = compact(store, grace_s=0.0, retention=retention)
    assert report is not None
    assert report.expired > 0
    snapshot = store.manifest.read()
    cutoff = retention.raw_cutoff()
    assert cutoff is not None
    assert all(f.max_ts >= cutoff for f in snapshot.fragments)  # no raw file of an old day
    days = {r.min_ts // DAY_MS for r in snapshot.rollups}
    assert days == {OLD // DAY_MS, OLD // DAY_MS + 1, MIDDLE // DAY_MS}
    assert not has_work(snapshot, retention)
    assert compact(store, grace_s=0.0, retention=retention) is not None  # purges retired files
    on_disk = {p.name for p in store.fragment_dir.iterdir()}
    assert on_disk == snapshot.listed()  # raw files gone, rollups there
    assert verify(store) == []
    assert answers(store) == before


def test_1s_buckets_past_raw_retention_are_refused(store: Store) -> None:
    assert compact(store, grace_s=0.0, retention=Retention(10)) is not None
    q = Query("heart_rate", "u", OLD, OLD + 3_600_000, slot="1s")
    with pytest.raises(InvalidInput, match="1s buckets need raw readings"):
        reader(store).run(q)
    q = Query("heart_rate", "u", RECENT, RECENT + 3_600_000, slot="1s")
    assert reader(store).run(q) is not None  # within raw retention: as always


def test_rollup_retention_drops_the_oldest_days_whole(store: Store) -> None:
    retention = Retention(10, 20)
    assert compact(store, grace_s=0.0, retention=retention) is not None
    snapshot = store.manifest.read()
    assert {r.min_ts // DAY_MS for r in snapshot.rollups} == {MIDDLE // DAY_MS}
    r = reader(store)
    assert r.run(Query("heart_rate", "u", OLD, OLD + 2 * DAY_MS)) is None
    assert r.run(Query("heart_rate", "u", MIDDLE, MIDDLE + DAY_MS)) is not None
    # later, the middle day's rollups go too
    assert compact(store, grace_s=0.0, retention=Retention(10, 12)) is not None
    assert store.manifest.read().rollups == ()
    assert compact(store, grace_s=0.0, retention=Retention(10, 12)) is not None
    assert {p.name for p in store.fragment_dir.iterdir()} == store.manifest.read().listed()


def test_late_readings_for_a_rolled_up_day_are_dropped(store: Store) -> None:
    assert compact(store, grace_s=0.0, retention=Retention(10)) is not None
    before = reader(store).run(Query("heart_rate", "u", OLD, OLD + DAY_MS))
    store.publish({"heart_rate": readings(random.Random(1), OLD, 50, 10**9)})
    report = compact(store, force=True, grace_s=0.0, retention=Retention(10))
    assert report is not None
    assert report.expired >= 1
    assert reader(store).run(Query("heart_rate", "u", OLD, OLD + DAY_MS)).equals(before)  # type: ignore[union-attr]


def test_no_retention_keeps_everything(store: Store) -> None:
    listed = store.manifest.read().fragments
    report = compact(store, grace_s=0.0)
    assert report is not None
    assert report.expired == 0
    assert store.manifest.read().rollups == ()
    assert len(store.manifest.read().fragments) <= len(listed)


@pytest.mark.parametrize(
    "env",
    [
        {"HR_ROLLUP_RETENTION_DAYS": "30"},
        {"HR_RETENTION_DAYS": "40", "HR_ROLLUP_RETENTION_DAYS": "30"},
    ],
)
def test_rollups_cannot_expire_before_raw_readings(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="HR_ROLLUP_RETENTION_DAYS"):
        Settings.from_env(env)


def test_retention_settings_are_read() -> None:
    settings = Settings.from_env({"HR_RETENTION_DAYS": "30", "HR_ROLLUP_RETENTION_DAYS": "400"})
    assert (settings.retention_days, settings.rollup_retention_days) == (30, 400)
    assert (Settings().retention_days, Settings().rollup_retention_days) == (0, 0)


def test_a_backup_keeps_the_rolled_up_days(store: Store, tmp_path: Path) -> None:
    assert compact(store, grace_s=0.0, retention=Retention(10)) is not None
    before = answers(store)
    backup(store, tmp_path / "copy")
    copy = Store(tmp_path / "copy", "w2", 5)
    assert copy.manifest.read().rollups == store.manifest.read().rollups
    assert verify(copy) == []
    assert answers(copy) == before


def test_an_erase_reaches_the_rolled_up_days(store: Store) -> None:
    from service.storage import erasure

    assert compact(store, grace_s=0.0, retention=Retention(10)) is not None
    assert store.manifest.read().rollups
    old = Query("heart_rate", "v", OLD, OLD + 2 * DAY_MS, extremes=True)
    before = reader(store).run(old)
    assert before is not None
    erasure.begin(store, "u")
    r = reader(store)
    for start, end in [(OLD, OLD + 2 * DAY_MS), (OLD, TODAY)]:
        assert r.run(Query("heart_rate", "u", start, end)) is None  # hidden at once
    progress = erasure.finish(store)
    assert progress is not None
    assert progress.done
    for entry in store.manifest.read().rollups:  # and gone from the files
        users = pl.read_parquet(store.fragment_dir / entry.name)["user_id"].unique().to_list()
        assert users == ["v"]
    after = reader(store).run(old)  # the other user answers as before
    assert after is not None
    assert after.sort("slot", "device_id").equals(before.sort("slot", "device_id"))
