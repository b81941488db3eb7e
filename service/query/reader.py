"""The query path: unflushed rows first, the manifest second, one Polars lazy plan.

Order matters (invariant 7): a flush moves rows from a buffer or WAL into a fragment
and only then forgets them, so reading the unflushed rows before the manifest never
misses a row in transit; a row seen in both places is removed by ``dedupe``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import polars as pl

from service import metrics
from service.catalog import METRICS, ROW_SCHEMA
from service.config import Settings
from service.ingest.buffer import Buffer
from service.query.aggregate import combine, per_minute, select, single_device
from service.storage.compaction import DAY_MS, TOP_LEVEL
from service.storage.store import Store
from service.storage.wal import TailReader, list_segments


@dataclass(frozen=True, slots=True)
class Query:
    metric: str
    user_id: str
    start_ms: int
    end_ms: int
    device_id: str | None = None


class Reader:
    def __init__(self, settings: Settings, store: Store, buffer: Buffer) -> None:
        self._settings = settings
        self._store = store
        self._buffer = buffer
        self._tails = {name: TailReader(name) for name in METRICS}

    def run(self, q: Query) -> bytes | None:
        """The response body for ``q``, or None when no reading matches. Blocking."""
        started = time.perf_counter()
        settled, fresh = self._sources(q)
        if settled is None and fresh is None:
            frame = None
        else:
            frame = self._plan(q, settled, fresh).collect()
        metrics.QUERY_SECONDS.observe(time.perf_counter() - started)
        if frame is None or frame.height == 0:
            return None
        return _encode(q.user_id, frame)

    def _sources(self, q: Query) -> tuple[pl.LazyFrame | None, pl.LazyFrame | None]:
        """(settled, fresh): compacted day files, and every other row (unflushed first)."""
        unflushed = self._buffer.snapshot(q.metric)
        others = [
            path
            for worker, paths in list_segments(self._store.wal_dir).items()
            if worker != self._store.worker
            for path in paths
        ]
        unflushed += self._tails[q.metric].read(others)
        fragments = self._store.fragments(q.metric, q.start_ms, q.end_ms)
        metrics.QUERY_FRAGMENTS.observe(len(fragments))
        metrics.QUERY_ROWS.observe(
            sum(df.height for df in unflushed) + sum(f.rows for f in fragments)
        )
        days: set[int] = set()
        settled_paths, fresh_paths = [], []
        for f in fragments:
            day = f.min_ts // DAY_MS
            if f.level == TOP_LEVEL and day not in days:
                days.add(day)
                settled_paths.append(self._store.fragment_dir / f.name)
            else:
                fresh_paths.append(self._store.fragment_dir / f.name)
        fresh = [df.lazy() for df in unflushed]
        if fresh_paths:
            fresh.append(pl.scan_parquet(fresh_paths, schema=ROW_SCHEMA))
        settled = pl.scan_parquet(settled_paths, schema=ROW_SCHEMA) if settled_paths else None
        return settled, (pl.concat(fresh) if fresh else None)

    def _plan(
        self, q: Query, settled: pl.LazyFrame | None, fresh: pl.LazyFrame | None
    ) -> pl.LazyFrame:
        spec = METRICS[q.metric]

        def pick(lf: pl.LazyFrame | None) -> pl.LazyFrame | None:
            return None if lf is None else select(lf, q.user_id, q.start_ms, q.end_ms, q.device_id)

        rows = combine(pick(settled), pick(fresh))
        if q.device_id is not None:
            buckets = single_device(rows, spec.aggregation)
        else:
            buckets = per_minute(
                rows,
                self._settings.device_priority,
                self._settings.priority_scope,
                spec.aggregation,
            )
        return buckets.select(
            pl.col("minute").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
            pl.col("value").alias(spec.field),
            pl.col("device_id"),
        )


def _encode(user_id: str, frame: pl.DataFrame) -> bytes:
    # Polars writes the rows straight to JSON bytes: no per-row Python objects
    head = '{"user_id":' + json.dumps(user_id) + ',"data":'
    tail = ',"count":' + str(frame.height) + "}"
    return head.encode() + frame.write_json().encode() + tail.encode()
