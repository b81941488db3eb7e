"""Per-minute partials answer every minute-slot query exactly like the plain path.

The plain path (``Reader(merging=False)``) de-duplicates every raw row of the range, then
aggregates; the partial path adds up each source's per-minute partials and reads raw rows
only for dirty minutes (a source holding an identity twice, two sources whose timestamps
meet) and for minutes the range cuts. Both read the same store here: compacted days with
rollups, level-0 fragments and unflushed rows, with identities re-sent across and within
sources, several devices, with and without a priority list.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from service.config import Settings
from service.ingest.buffer import Buffer
from service.partials import spanned
from service.query import minute_path
from service.query.buckets import Shape
from service.query.minutes import UserSpans, gather, merge
from service.query.reader import Reader
from service.query.rollups import FileAnswers, frame_bytes
from service.query.series import json_body
from service.query.sources import Query
from service.schema import ROW_SCHEMA, Rows
from service.storage.compaction import compact
from service.storage.store import Store

BASE = 1_705_312_800_000  # 2024-01-15T10:00:00Z
DAY = 86_400_000
USERS = ("u1", "u2")
NEW_USER = "u3"  # in the unflushed rows only
DEVICES = ("watch", "phone", "ring")


def rows(rng: random.Random, seq0: int, n: int, start: int, span: int, step: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [rng.choice(USERS) for _ in range(n)],
            "device_id": [rng.choice(DEVICES) for _ in range(n)],
            "ts": [start + rng.randrange(0, span, step) for _ in range(n)],
            "value": [float(rng.randint(40, 180)) for _ in range(n)],
            "seq": list(range(seq0, seq0 + n)),
        },
        schema=ROW_SCHEMA,
    )


def buffer_rows(buffer: Buffer, frame: pl.DataFrame, first_seq: int) -> None:
    """``frame``'s rows (``ROW_SCHEMA``) added to ``buffer`` from ``first_seq`` on."""
    users, devices = frame["user_id"].to_list(), frame["device_id"].to_list()
    ts, values = frame["ts"].dt.epoch("ms").to_list(), frame["value"].to_list()
    buffer.add("heart_rate", Rows(users, devices, ts, values), first_seq)


def store_with_every_source(tmp_path: Path, seed: int) -> tuple[Store, Buffer]:
    """Day 0 compacted (with rollups), then level-0 fragments over days 0-1 and unflushed
    rows over both; coarse timestamps so identities repeat between and within sources."""
    rng = random.Random(seed)
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    seq = 1
    for _ in range(6):
        store.publish({"heart_rate": rows(rng, seq, 300, BASE, DAY // 4, 1_000)})
        seq += 300
    assert compact(store, force=True, grace_s=0) is not None
    for _ in range(4):  # fragments: some minutes of day 0 again, most of day 1 new
        start = BASE + rng.choice((DAY // 8, DAY))
        store.publish(
            {"heart_rate": rows(rng, seq, 200, start, DAY // 8, rng.choice((500, 7_000)))}
        )
        seq += 200
    buffer = Buffer()
    extra = rows(rng, seq, 150, BASE + DAY // 8, DAY, 20_000)
    extra = pl.concat([extra, extra.head(10).with_columns(pl.col("seq") + 1_000)])  # twice
    buffer_rows(buffer, extra, seq)
    # a user no file holds: their minutes come from the unflushed rows alone
    new = rows(rng, seq + 2_000, 40, BASE + DAY // 8, DAY, 20_000)
    new = new.with_columns(pl.lit(NEW_USER).alias("user_id"))
    buffer_rows(
        buffer, pl.concat([new, new.head(5).with_columns(pl.col("seq") + 100)]), seq + 2_000
    )
    return store, buffer


def close(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) < 1e-9
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("priority", ["", "ring:1,phone:2"])
@pytest.mark.parametrize("kept", [True, False], ids=["files-kept", "per-query"])
def test_the_partial_path_answers_like_the_plain_path(
    tmp_path: Path, seed: int, priority: str, kept: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not kept:  # files spanning longer than KEPT_SPAN_MS merge per query
        monkeypatch.setattr(minute_path, "KEPT_SPAN_MS", 0)
    store, buffer = store_with_every_source(tmp_path, seed)
    settings = Settings.from_env({"HR_DATA_DIR": str(tmp_path), "HR_DEVICE_PRIORITY": priority})
    merged = Reader(settings, store, buffer)
    plain = Reader(settings, store, buffer, merging=False)
    assert {f.level for f in store.manifest.read().fragments} >= {0, 2}  # every source
    rng = random.Random(seed)
    ranges = [(BASE, BASE + 2 * DAY)] + [
        (BASE + rng.randrange(0, DAY, 1_000), BASE + DAY + rng.randrange(0, DAY, 1_000))
        for _ in range(3)
    ]
    shapes = [Shape(), Shape("1h", stats=("min", "max", "count")), Shape("5m", "Asia/Kolkata")]
    for user in (*USERS, NEW_USER):
        for start, end in ranges:
            for device in (None, "phone"):
                for shape in shapes:
                    q = Query("heart_rate", user, start, end, device, extremes=shape.extremes)
                    want, got = json_body(plain, q, shape), json_body(merged, q, shape)
                    assert (want is None) == (got is None)
                    if want is not None and got is not None:
                        assert close(json.loads(got), json.loads(want)), (user, start, end, shape)


def test_a_minute_is_dirty_when_spans_meet_or_a_source_repeats_an_identity() -> None:
    # a rollup row spans its whole minute: it meets every other source there
    def part(device: str, ts: list[int]) -> pl.LazyFrame:
        frame = pl.DataFrame(
            {
                "user_id": ["u"] * len(ts),
                "device_id": [device] * len(ts),
                "ts": ts,
                "value": [60.0] * len(ts),
                "seq": list(range(len(ts))),
            },
            schema=ROW_SCHEMA,
        )
        return spanned(frame.lazy())

    minute = 60_000
    sources = [
        part("a", [0, 10_000]),  # minute 0: [0, 10 s] ...
        part("a", [20_000, 59_000]),  # ... and [20, 59 s]: apart, clean
        part("a", [minute + 5_000]),  # minute 1: 5 s ...
        part("a", [minute + 1_000, minute + 5_000]),  # ... within [1, 5 s]: they meet
        part("b", [minute + 5_000]),  # another device: its own identities
        part("a", [2 * minute, 2 * minute]),  # minute 2: one source, one identity twice
    ]
    parts = gather([], [lf.collect() for lf in sources]).collect()
    added, dirty = merge(parts)
    assert sorted(dirty.to_list()) == [minute, 2 * minute]
    # minute 0's two sources add up; the dirty minutes are left to the raw rows
    assert added.select("device_id", "count").rows() == [("a", 4)]


def test_a_frame_is_summarised_once_per_user_while_it_is_listed() -> None:
    rng = random.Random(1)
    spans = UserSpans()
    first, second = rows(rng, 1, 50, BASE, DAY, 1_000), rows(rng, 100, 50, BASE, DAY, 1_000)
    assert spans.split([first], "u1") == ([], [first], [])
    made = UserSpans.plan(first, "u1").collect()
    want = spanned(first.filter(pl.col("user_id") == "u1").lazy()).collect()
    assert made.sort("device_id", "minute").equals(want.sort("device_id", "minute"))
    serial = spans.keep(first, "u1", made)
    assert serial is not None
    assert spans.split([first, second], "u1") == ([made], [second], [serial])
    assert spans.split([first, second], "u2") == ([], [first, second], [])  # per user
    later = spans.keep(second, "u1", UserSpans.plan(second, "u1").collect())
    assert later is not None
    assert later > serial  # serials are never reused
    assert spans.split([second], "u1")[1:] == ([], [later])  # ``first`` flushed: forgotten ...
    assert spans.split([first], "u1") == ([], [first], [])  # ... and summarised again if seen
    # a frame no longer listed is not kept
    assert spans.keep(rows(rng, 200, 5, BASE, DAY, 1_000), "u1", made) is None


def test_kept_partials_stay_within_their_budget_oldest_dropped_first() -> None:
    rng = random.Random(2)
    frame = rows(rng, 1, 400, BASE, DAY, 1_000)
    one = UserSpans.plan(frame, "u1").collect()
    spans = UserSpans(budget_bytes=frame_bytes(one) * 3)
    spans.split([frame], "u1")
    users = [f"x{i}" for i in range(5)]
    for user in users:
        assert spans.keep(frame, user, one) is not None
    kept = [spans.split([frame], user)[0] != [] for user in users]
    assert kept == [False, False, True, True, True]


def test_merged_minutes_are_kept_until_the_users_unflushed_rows_or_files_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = store_with_every_source(tmp_path, 5)
    buffer = Buffer()
    settings = Settings(data_dir=tmp_path)
    merged, plain = Reader(settings, store, buffer), Reader(settings, store, buffer, merging=False)
    computed: list[int] = []
    original = pl.collect_all

    def counted(plans: Any, **kwargs: Any) -> Any:
        plans = list(plans)
        computed.append(len(plans))
        return original(plans, **kwargs)

    monkeypatch.setattr(pl, "collect_all", counted)
    seq = 70_000

    def add(user: str, ts: int) -> None:
        nonlocal seq
        seq += 1
        buffer.add("heart_rate", Rows([user], ["phone"], [ts], [99.0]), seq)

    def merges() -> int:
        return computed.count(3)  # the merge plan's three outputs

    def check(start: int = BASE) -> None:
        q = Query("heart_rate", "u1", start, BASE + 2 * DAY)
        assert json_body(merged, q) == json_body(plain, q)

    many = [BASE + DAY + 5 * 3_600_000 + k * 1_000 for k in range(50)]
    buffer.add("heart_rate", Rows(["u1"] * 50, ["phone"] * 50, many, [70.0] * 50), seq)
    seq += 50
    check()
    before = merges()
    assert before == 1
    for k in range(3):  # another user's readings, other ranges: the same merged minutes
        add("u2", BASE + k * 1_000)
        check(BASE + (k + 1) * 60_000)
        check(BASE + (k + 1) * 60_000 + 30_000)  # a cut minute: raw rows, nothing merged
    assert merges() == before
    add("u1", BASE + DAY + 7 * 3_600_000)  # the user's own: merged again
    check()
    assert merges() == before + 1
    store.publish({"heart_rate": rows(random.Random(9), 80_000, 50, BASE, DAY, 60_000)})
    check()  # a new file: merged again
    assert merges() == before + 2


def test_a_dirty_minute_is_read_from_the_file_that_holds_it(tmp_path: Path) -> None:
    # the first fragment holds none of u1's rows: the file read for u1's dirty minute must
    # still be the second one, where u1's reading is sent twice
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    other = [("u2", "watch", BASE + 1_000, 70.0, 1)]
    twice = [("u1", "watch", BASE + 5_000, 60.0, 2), ("u1", "watch", BASE + 5_000, 90.0, 3)]
    for rows_ in (other, twice):
        store.publish({"heart_rate": pl.DataFrame(rows_, schema=ROW_SCHEMA, orient="row")})
    settings = Settings(data_dir=tmp_path)
    q = Query("heart_rate", "u1", BASE, BASE + DAY)
    got = json_body(Reader(settings, store, Buffer()), q)
    assert got is not None
    assert json.loads(got)["data"][0]["heart_rate"] == 90.0  # the later write
    assert got == json_body(Reader(settings, store, Buffer(), merging=False), q)


def test_the_minutes_of_a_set_of_files_are_computed_once_for_ranges_in_the_same_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # u1's files' minutes (spans and picks) are kept per set of files; unflushed rows (u2's
    # here) and ranges change nothing in them, a new file of u1 changes the set
    store, full = store_with_every_source(tmp_path, 3)
    buffer = Buffer()
    others = full.snapshot("heart_rate")[0].filter(pl.col("user_id") == "u2")
    buffer_rows(buffer, others, 50_000)
    settings = Settings.from_env({"HR_DATA_DIR": str(tmp_path), "HR_DEVICE_PRIORITY": "ring:1"})
    merged = Reader(settings, store, buffer)
    plain = Reader(settings, store, buffer, merging=False)
    kept: list[tuple[object, ...]] = []
    original = FileAnswers.put

    def counted(self: FileAnswers, key: tuple[object, ...], *args: Any) -> None:
        if not isinstance(key[0], tuple):  # the files' minutes (not their merges)
            kept.append(key)
        original(self, key, *args)

    monkeypatch.setattr(FileAnswers, "put", counted)
    minute = 60_000
    midnight = BASE - 10 * 60 * minute  # every range below lies in the same two UTC days
    ranges = [
        (midnight, midnight + 2 * DAY),
        (BASE + 90 * minute, BASE + DAY + 7 * minute),
        (BASE + 90 * minute + 1_500, BASE + DAY + 7 * minute - 2_500),  # cut minutes
    ]
    shapes = [Shape(), Shape("1h", stats=("min", "max", "count"))]

    def check_all() -> None:
        for start, end in ranges:
            for device in (None, "phone"):
                for shape in shapes:
                    q = Query("heart_rate", "u1", start, end, device, extremes=shape.extremes)
                    want, got = json_body(plain, q, shape), json_body(merged, q, shape)
                    assert want is not None
                    assert got is not None
                    assert close(json.loads(got), json.loads(want)), (start, end, device)

    check_all()
    assert [k[4] for k in kept] == [None, "phone"]  # one per device filter, not per range
    check_all()
    assert len(kept) == 2  # both kept
    store.publish({"heart_rate": rows(random.Random(9), 60_000, 100, BASE, DAY, 60_000)})
    check_all()
    assert len(kept) == 4  # a new file: a new set


def test_an_unflushed_reading_in_the_range_is_never_hidden_by_a_kept_answer(
    tmp_path: Path,
) -> None:
    store, _ = store_with_every_source(tmp_path, 4)
    buffer = Buffer()
    settings = Settings(data_dir=tmp_path)
    merged = Reader(settings, store, buffer)
    q = Query("heart_rate", "u1", BASE, BASE + 2 * DAY, "phone")
    before = json_body(merged, q)
    assert before is not None
    late = BASE + DAY + 6 * 3_600_000 + 30_000  # a minute none of the files holds
    buffer.add("heart_rate", Rows(["u1"], ["phone"], [late], [222.0]), 90_000)
    after = json_body(merged, q)
    assert after is not None
    assert after == json_body(Reader(settings, store, buffer, merging=False), q)
    buckets = {b["timestamp"]: b["heart_rate"] for b in json.loads(after)["data"]}
    assert buckets.pop("2024-01-16T16:00:00Z") == 222.0
    assert buckets == {b["timestamp"]: b["heart_rate"] for b in json.loads(before)["data"]}
