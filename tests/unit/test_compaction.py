"""Compaction keeps every answer, bounds the file count, and retires files gracefully."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import polars as pl
import pytest
from filelock import FileLock

from service.config import Settings
from service.ingest.buffer import Buffer
from service.maintenance import verify
from service.query.reader import Reader
from service.query.series import json_body
from service.query.sources import Query
from service.schema import ROW_SCHEMA
from service.storage.compaction import compact, user_ranges
from service.storage.compaction_policy import TIER_FILES, has_work
from service.storage.store import Store

BASE = 1_705_312_800_000
DAY = 86_400_000


def chunk(rng: random.Random, seq0: int, n: int = 200) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [rng.choice(["u1", "u2", "u3"]) for _ in range(n)],
            "device_id": [rng.choice(["device_a", "device_b", "ring"]) for _ in range(n)],
            # three days, coarse steps so identities repeat across fragments
            "ts": [BASE + rng.randrange(0, 3 * DAY, 15_000) for _ in range(n)],
            "value": [float(rng.randint(30, 220)) for _ in range(n)],
            "seq": list(range(seq0, seq0 + n)),
        },
        schema=ROW_SCHEMA,
    )


def filled(root: Path, seed: int, chunks: int, rows: int = 200, worker: str = "w1") -> Store:
    """A store with ``chunks`` level-0 fragments of ``rows`` random rows each."""
    rng = random.Random(seed)
    store = Store(root, worker, 5)
    store.ensure_layout()
    for i in range(chunks):
        store.publish({"heart_rate": chunk(rng, i * 1000, rows)})
    return store


def answers(store: Store, tmp_path: Path) -> list[bytes | None]:
    reader = Reader(Settings(data_dir=tmp_path), store, Buffer())
    out = []
    for user in ("u1", "u2", "u3"):
        for start, end in [(BASE, BASE + 3 * DAY), (BASE + DAY - 60_000, BASE + DAY + 90_000)]:
            out.append(json_body(reader, Query("heart_rate", user, start, end)))
            out.append(json_body(reader, Query("heart_rate", user, start, end, "ring")))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compaction_changes_no_answer(tmp_path: Path, seed: int) -> None:
    store = filled(tmp_path, seed, 20)
    before = answers(store, tmp_path)
    assert compact(store, min_files=4) is not None
    assert answers(store, tmp_path) == before
    assert {f.level for f in store.manifest.read().fragments} <= {1, 2}
    assert compact(store, force=True, grace_s=3600) is not None
    assert answers(store, tmp_path) == before
    days = {f.min_ts // DAY for f in store.manifest.read().fragments}
    assert len(store.manifest.read().fragments) == len(days)  # small days: one file each
    assert verify(store) == []


def frame(rows: list[tuple[str, str, int, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row")


def test_rollups_answer_exactly_like_raw_rows_under_fresher_data(tmp_path: Path) -> None:
    rng = random.Random(11)
    rolled, raw = Store(tmp_path / "a", "w1", 5), Store(tmp_path / "b", "w1", 5)
    for store in (rolled, raw):
        store.ensure_layout()
    # dense data (every minute of two hours around midnight has rows) so that every edge
    # and every minute the fresher rows touch matters
    midnight = BASE + DAY - 10 * 3_600_000
    chunks = [
        chunk(rng, i * 1000, 400).with_columns(
            pl.lit(midnight - 3_600_000)
            .add(pl.Series([rng.randrange(0, 7_200_000, 1000) for _ in range(400)]))
            .cast(pl.Datetime("ms", "UTC"))
            .alias("ts")
        )
        for i in range(15)
    ]
    for c in chunks[:10]:
        rolled.publish({"heart_rate": c})
        raw.publish({"heart_rate": c})
    assert compact(rolled, force=True, grace_s=3600) is not None
    assert all(f.rollup for f in rolled.manifest.read().fragments)
    # fresher rows on top: new readings and new values for settled identities
    for c in chunks[10:13]:
        rolled.publish({"heart_rate": c})
        raw.publish({"heart_rate": c})
    unflushed = Buffer()
    late = chunks[13]
    unflushed.add("heart_rate", _rows(late), int(late["seq"][0]))
    ranges = [
        (BASE, BASE + 3 * DAY),
        (midnight - 3_000_000 + 12_345, midnight + 1_807_777),  # partial minutes at both edges
        (midnight + 61_000, midnight + 119_000),  # inside one minute
        (midnight - 60_000, midnight + 90_000),
    ]
    for scope in ("bucket", "timestamp"):
        settings = Settings(data_dir=tmp_path, priority_scope=scope)  # type: ignore[arg-type]
        readers = [Reader(settings, s, unflushed) for s in (rolled, raw)]
        for user in ("u1", "u2", "u3"):
            for start, end in ranges:
                for device in (None, "ring"):
                    q = Query("heart_rate", user, start, end, device)
                    got, want = (json_body(r, q) for r in readers)
                    assert got == want, (scope, user, start, end, device)


def _rows(df: pl.DataFrame):
    from service.schema import Rows

    return Rows(
        df["user_id"].to_list(),
        df["device_id"].to_list(),
        df["ts"].dt.epoch("ms").to_list(),
        df["value"].to_list(),
    )


def test_compaction_counts_duplicates_apart_from_replacements(tmp_path: Path) -> None:
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    x, y, z = BASE, BASE + 1000, BASE + 2000
    store.publish({"heart_rate": frame([("u", "d", x, 70.0, 1), ("u", "d", y, 70.0, 2)])})
    store.publish({"heart_rate": frame([("u", "d", x, 70.0, 3), ("u", "d", z, 70.0, 4)])})
    store.publish({"heart_rate": frame([("u", "d", x, 70.0, 5), ("u", "d", y, 80.0, 6)])})
    store.publish({"heart_rate": frame([("u", "d", z, 80.0, 7), ("u", "d", z, 70.0, 8)])})
    report = compact(store, force=True, grace_s=3600)
    assert report is not None
    # x: sent 3 times alike; y: 70 then 80; z: 70, 80, 70 (one replacement, one repeat)
    assert (report.duplicates, report.replaced) == (3, 2)
    reader = Reader(Settings(data_dir=tmp_path), store, Buffer())
    body = json_body(reader, Query("heart_rate", "u", BASE, BASE + 60_000))
    assert body is not None
    assert json.loads(body)["data"][0]["heart_rate"] == (70 + 80 + 70) / 3


def test_file_count_stays_bounded_under_continuous_ingestion(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    counts = []
    for i in range(120):
        store.publish({"heart_rate": chunk(rng, i * 1000, 50)})
        compact(store, min_files=4, grace_s=0)
        counts.append(len(store.manifest.read().fragments))
    # fewer than min_files at level 0, and per UTC day (the data touches 4) fewer than
    # TIER_FILES * min_files at level 1 plus one level-2 file
    assert max(counts) <= 3 + 4 * (TIER_FILES * 4 - 1 + 1)
    assert counts[-1] < max(counts)  # day merges do happen
    compact(store, min_files=4, grace_s=0)  # the next pass purges what the last one retired
    listed = [name for f in store.manifest.read().fragments for name in f.files]
    assert sorted(p.name for p in store.fragment_dir.iterdir()) == sorted(listed)


def test_retired_files_outlive_the_grace_period_only(tmp_path: Path) -> None:
    store = filled(tmp_path, 3, 4)
    old = [store.fragment_dir / f.name for f in store.manifest.read().fragments]
    compact(store, min_files=4, grace_s=3600)
    assert all(p.exists() for p in old)  # a running query may still read them
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(r["name"] for r in doc["retired"]) == sorted(p.name for p in old)
    report = compact(store, min_files=4, grace_s=0)
    assert report is not None
    assert report.purged == 4
    assert not any(p.exists() for p in old)
    assert json.loads((tmp_path / "manifest.json").read_text())["retired"] == []


def test_only_one_compactor_runs_at_a_time(tmp_path: Path) -> None:
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    with FileLock(tmp_path / "compaction.lock", thread_local=False):
        import threading

        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(compact(store)))
        t.start()
        t.join(30)
    assert result == [None]
    assert compact(store) is not None


def test_a_reused_worker_id_never_overwrites_a_fragment(tmp_path: Path) -> None:
    first = filled(tmp_path, 11, 3, worker="same")
    before = answers(first, tmp_path)
    second = Store(tmp_path, "same", 5)  # its name counter starts again at 1
    assert compact(second, force=True, grace_s=3600) is not None
    assert len(second.manifest.read().fragments) >= 1
    assert answers(second, tmp_path) == before
    assert verify(second) == []


def test_a_level0_merge_takes_at_most_max_rows(tmp_path: Path) -> None:
    rng = random.Random(9)
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    one_day = [chunk(rng, i * 1000, 100).with_columns(pl.lit(BASE).alias("ts")) for i in range(10)]
    for c in one_day:
        store.publish({"heart_rate": c.cast(ROW_SCHEMA)})  # type: ignore[arg-type]
    report = compact(store, min_files=2, grace_s=3600, max_rows=250)
    assert report is not None
    # five merges of two 100-row fragments, then the day's five level-1 files into one
    assert (report.files_in, report.files_out) == (10 + 5, 5 + 1)
    assert [f.level for f in store.manifest.read().fragments] == [2]


def test_a_day_merge_works_one_user_range_at_a_time(tmp_path: Path) -> None:
    users = [f"u{i:02d}" for i in range(20)]

    def fill(store: Store, rng: random.Random, first: int, count: int) -> None:
        for i in range(first, first + count):
            rows = chunk(rng, i * 1000, 150).with_columns(
                pl.Series("user_id", [rng.choice(users) for _ in range(150)])
            )
            store.publish({"heart_rate": rows})

    compacted, plain = Store(tmp_path / "c", "w1", 5), Store(tmp_path / "p", "w1", 5)
    rngs = random.Random(4), random.Random(4)
    for store, rng in zip((compacted, plain), rngs, strict=True):
        store.ensure_layout()
        fill(store, rng, 0, 12)
    compact(compacted, min_files=4, grace_s=3600, max_rows=200)
    for store, rng in zip((compacted, plain), rngs, strict=True):
        fill(store, rng, 12, 12)  # more rows for the same days: ranges are cut anew
    report = compact(compacted, force=True, grace_s=3600, max_rows=200)
    assert report is not None

    def ask(store: Store) -> list[bytes | None]:
        reader = Reader(Settings(data_dir=store.root), store, Buffer())
        return [json_body(reader, Query("heart_rate", u, BASE, BASE + 3 * DAY)) for u in users]

    assert ask(compacted) == ask(plain)
    files = compacted.manifest.read().fragments
    days = len({f.min_ts // DAY for f in files})
    reader = Reader(Settings(data_dir=compacted.root), compacted, Buffer())
    for user in users:  # a query reads one day file per day and nothing else
        q = Query("heart_rate", user, BASE, BASE + 3 * DAY)
        sources = reader._sources(q, reader.unflushed(q.metric), False)
        assert (len(sources.settled), sources.loose, sources.unflushed) == (days, [], [])
    assert {f.level for f in files} == {2}
    for day in {f.min_ts // DAY for f in files}:
        ranges = sorted(
            ((f.user_lo, f.user_hi) for f in files if f.min_ts // DAY == day),
            key=lambda r: r[0] or "",
        )
        assert len(ranges) > 1
        # disjoint and covering: each range starts where the previous one ends
        assert ranges[0][0] is None
        assert ranges[-1][1] is None
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        for user in users:
            holding = compacted.fragments("heart_rate", day * DAY, (day + 1) * DAY, user)
            assert len(holding) == 1
    assert all(f.rows <= 200 for f in files)
    assert verify(compacted) == []


def test_user_ranges_never_split_a_user() -> None:
    assert user_ranges(["a", "b", "c", "d"], [2, 2, 5, 1], 4) == [
        (None, "c"),
        ("c", "d"),
        ("d", None),
    ]
    assert user_ranges(["a"], [10], 4) == [(None, None)]


def test_a_long_query_over_many_raw_rows_runs_a_day_at_a_time_with_the_same_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.query import reader as reader_module
    from service.schema import Rows

    store = filled(tmp_path, 6, 10)
    compact(store, min_files=4, grace_s=3600)  # some rows in day files, the rest raw
    rng = random.Random(8)
    store.publish({"heart_rate": chunk(rng, 50_000)})
    buffer = Buffer()  # and unflushed rows that repeat identities of stored ones
    stored = chunk(random.Random(6), 0, 40)
    buffer.add(
        "heart_rate",
        Rows(
            stored["user_id"].to_list(),
            stored["device_id"].to_list(),
            stored["ts"].dt.epoch("ms").to_list(),
            [v + 1 for v in stored["value"].to_list()],
        ),
        10**9,
    )
    # the plain path (rows de-duplicated, then partials) is the one that splits by day
    reader = Reader(Settings(data_dir=tmp_path), store, buffer, merging=False)
    days: list[tuple[int, int]] = []
    answer = Reader._answer

    def counting(self, q: Query, *args):
        days.append((q.start_ms, q.end_ms))
        return answer(self, q, *args)

    monkeypatch.setattr(Reader, "_answer", counting)
    queries = [
        Query("heart_rate", user, BASE - 7_000, BASE + 3 * DAY + 5_000, device)
        for user in ("u1", "u2", "u3")
        for device in (None, "ring")
    ]
    whole = [json_body(reader, q) for q in queries]
    assert len(days) == len(queries)  # under the threshold: one piece each
    days.clear()
    monkeypatch.setattr(reader_module, "SPLIT_SCAN_ROWS", 100)
    assert [json_body(reader, q) for q in queries] == whole
    midnight = BASE // DAY * DAY + DAY  # the first one after BASE
    cuts = [BASE - 7_000, midnight, midnight + DAY, midnight + 2 * DAY, BASE + 3 * DAY + 5_000]
    assert days[:4] == list(itertools.pairwise(cuts))  # the range touches 4 UTC days
    assert len(days) == 4 * len(queries)
    assert all(answer is not None for answer in whole)


def test_has_work_says_whether_a_pass_would_merge_or_delete(tmp_path: Path) -> None:
    store = filled(tmp_path, 9, 3)
    assert not has_work(store, min_files=4)  # 3 level-0 files: nothing to merge
    store.publish({"heart_rate": chunk(random.Random(9), 10_000)})
    assert has_work(store, min_files=4)
    assert compact(store, min_files=4, grace_s=3600) is not None
    # the 4 level-0 files became one level-1 file per day; the inputs wait out their grace
    assert not has_work(store, min_files=4, grace_s=3600)
    assert has_work(store, min_files=4, grace_s=0)  # retired files are due for deletion
    compact(store, min_files=4, grace_s=0)
    assert not has_work(store, min_files=4, grace_s=0)
    day = BASE // DAY
    lower = [f for f in store.manifest.read().fragments if f.min_ts // DAY == day]
    assert has_work(store, min_files=len(lower), grace_s=0)  # a day's level-1 files pile up
    assert not has_work(store, min_files=len(lower) + 1, grace_s=0)


def test_a_growing_day_is_rewritten_a_bounded_number_of_times_per_row(tmp_path: Path) -> None:
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    ingested = written = 0
    files: list[int] = []
    for i in range(160):  # one UTC day growing in 160 flushes of new readings
        n = 50
        ts = [BASE + (i * n + j) * 1000 for j in range(n)]
        store.publish(
            {
                "heart_rate": pl.DataFrame(
                    {
                        "user_id": [f"u{j % 7}" for j in range(n)],
                        "device_id": ["device_a"] * n,
                        "ts": ts,
                        "value": [60.0] * n,
                        "seq": [i * n + j for j in range(n)],
                    },
                    schema=ROW_SCHEMA,
                )
            }
        )
        ingested += n
        report = compact(store, min_files=2, grace_s=0)
        assert report is not None
        written += report.rows_out
        files.append(len(store.manifest.read().fragments))
    # every row is written to level 1 once, then to level 2 a few times; rewriting the day
    # so far every 2 level-1 files (the old rule) wrote 21 rows per row ingested here
    assert written / ingested <= 8
    assert max(files) <= 1 + (TIER_FILES * 2 - 1) + 1  # level 0, level 1, level 2
    assert answers(store, tmp_path)  # still readable
