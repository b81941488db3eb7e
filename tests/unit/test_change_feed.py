"""The change feed keeps only watched users' readings, and finds the same changes of
those users as noting every reading would."""

from __future__ import annotations

from pathlib import Path

from service.live.feed import ChangeFeed
from service.schema import Rows
from service.storage.wal import SegmentWriter, encode_frame, segment_path

BASE_MS = 1_705_312_800_000


def rows(users: int, n: int, offset: int = 0) -> Rows:
    out = Rows()
    for i in range(n):
        out.add(f"u{i % users}", "device_a" if i % 2 else "device_b", BASE_MS + offset + i, 70.0)
    return out


def plain(batches: list[tuple[str, Rows, int]], watched: set[tuple[str, str]]):
    """Every reading noted, then the watched ones kept: what the watcher must see."""
    found: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for metric, r, first in batches:
        for i in range(len(r)):
            found.setdefault((metric, r.user_id[i]), []).append(
                (r.device_id[i], r.ts[i], r.value[i], first + i)
            )
    return {key: sorted(v) for key, v in found.items() if key in watched}


def test_only_watched_users_readings_are_held_between_ticks(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path, "w1")
    feed.active = True
    feed.watched = {("heart_rate", "u3")}
    feed.record("heart_rate", rows(100, 10_000), 1)
    feed.record("steps", rows(100, 1_000), 10_001)  # u3 of another metric: not watched
    held = feed.take_own()
    assert list(held) == [("heart_rate", "u3")]
    assert len(held[("heart_rate", "u3")]) == 100
    assert feed.take_own() == {}
    feed.active = False
    feed.record("heart_rate", rows(100, 10), 20_000)
    assert feed.take_own() == {}


def test_changes_are_those_of_noting_every_reading(tmp_path: Path) -> None:
    watched = {("heart_rate", "u1"), ("heart_rate", "u7"), ("steps", "u2"), ("steps", "gone")}
    own = [("heart_rate", rows(10, 500), 1), ("steps", rows(5, 300, 1_000), 501)]
    others = [("heart_rate", rows(10, 400, 2_000), 801), ("steps", rows(3, 50, 3_000), 1_201)]
    writer = SegmentWriter(segment_path(tmp_path, "w2", 1))
    feed = ChangeFeed(tmp_path, "w1")
    feed.resume()  # the other worker's segment is followed from its first frame on
    for metric, r, first in others:
        writer.append(encode_frame(metric, first, r))
    writer.close()
    feed.active = True
    feed.watched = watched
    for batch in own:
        feed.record(*batch)
    changes = feed.collect(feed.take_own(), watched)
    feed.close()
    assert {key: sorted(v) for key, v in changes.items()} == plain(own + others, watched)
