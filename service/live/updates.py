"""Bucket events of a stream: buckets computed by the series' own query, one JSON each.

A stream's event is one element of the series' ``data`` with ``stats=min,max,count`` at
the stream's interval (UTC-aligned, whatever the interval). Changed buckets are computed
again through ``query.series`` over the smallest ranges that hold them, so an event is
exactly what a GET of that bucket answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from service.query.buckets import INTERVALS, STATS, Shape
from service.query.reader import Reader
from service.query.series import series
from service.query.sources import Query
from service.schema import ROW_SCHEMA
from service.storage.quarantine import READ_ERRORS
from service.storage.store import Store

HOUR_MS = 3_600_000
# changed buckets closer than this many bucket widths are computed in one query
GAP_BUCKETS = 60
# a resume looks this much further back than its id: a reading's sequence stamp is taken
# before its group commit's write, so it may show up in a WAL after later-stamped events
RESUME_MARGIN_NS = 5_000_000_000


@dataclass(frozen=True, slots=True)
class Topic:
    """What one stream follows; streams of one topic share each computation."""

    metric: str
    user_id: str
    device_id: str | None
    interval: str

    @property
    def width_ms(self) -> int:
        return INTERVALS[self.interval]

    def bucket(self, ts_ms: int) -> int:
        return ts_ms // self.width_ms * self.width_ms


# (bucket start epoch ms, the event's JSON)
Update = tuple[int, str]


def buckets(reader: Reader, topic: Topic, starts: list[int]) -> list[Update]:
    """The current content of the buckets starting at ``starts`` (any order; a bucket
    that holds no reading any more is left out). Blocking."""
    wanted = set(starts)
    found: list[Update] = []
    for lo, hi in _ranges(sorted(wanted), topic.width_ms):
        found += [u for u in window(reader, topic, lo, hi) if u[0] in wanted]
    return found


def window(reader: Reader, topic: Topic, start_ms: int, end_ms: int) -> list[Update]:
    """Every bucket with readings in ``[start_ms, end_ms)``, ascending. Blocking."""
    shape = Shape(topic.interval, "UTC", STATS)
    q = Query(topic.metric, topic.user_id, start_ms, end_ms, topic.device_id, shape.slot, True)
    frame = series(reader, q, shape)
    return [] if frame is None else as_updates(frame)


def as_updates(frame: pl.DataFrame) -> list[Update]:
    """A series' buckets (with the stream's statistics) as events."""
    return [(epoch_ms(row["timestamp"]), json.dumps(row)) for row in frame.to_dicts()]


def last_hour(reader: Reader, topic: Topic, now_ms: int) -> list[Update]:
    """The buckets of the last hour (the one holding ``now_ms`` included). Blocking."""
    end = topic.bucket(now_ms) + topic.width_ms
    return window(reader, topic, topic.bucket(now_ms - HOUR_MS), end)


def changed_since(reader: Reader, store: Store, topic: Topic, since_ns: int) -> list[int]:
    """The starts of the buckets holding a reading of ``topic`` stamped after
    ``since_ns`` (less ``RESUME_MARGIN_NS``): the unflushed rows, and the files written
    since (a file's rows are all stamped before it is written). Blocking."""
    after = since_ns - RESUME_MARGIN_NS
    sources = [df.lazy() for df in reader.unflushed(topic.metric)]
    paths = []
    for info in store.fragments(topic.metric, 0, 2**62, topic.user_id):
        path = store.fragment_dir / info.name
        try:
            if path.stat().st_mtime_ns >= after:
                paths.append(path)
        except FileNotFoundError:
            continue  # retired by a compaction: its rows are in the file that replaced it
    if paths:
        sources.append(pl.scan_parquet(paths, schema=ROW_SCHEMA))
    if not sources:
        return []
    rows = pl.concat(sources).filter((pl.col("user_id") == topic.user_id) & (pl.col("seq") > after))
    if topic.device_id is not None:
        rows = rows.filter(pl.col("device_id") == topic.device_id)
    ts = rows.select(pl.col("ts").dt.epoch("ms").unique()).collect()["ts"]
    return sorted({topic.bucket(t) for t in ts.to_list()})


RESUME_ERRORS = READ_ERRORS  # a file gone under the scan: the caller starts afresh


def _ranges(starts: list[int], width: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering sorted bucket ``starts``, one per close group."""
    ranges: list[tuple[int, int]] = []
    for start in starts:
        if ranges and start - ranges[-1][1] <= GAP_BUCKETS * width:
            ranges[-1] = (ranges[-1][0], start + width)
        else:
            ranges.append((start, start + width))
    return ranges


def epoch_ms(label: str) -> int:
    return int(datetime.fromisoformat(label).timestamp() * 1000)
