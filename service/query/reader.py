"""The query path: unflushed rows first, the manifest second, one Polars lazy plan.

Order matters: a flush moves rows from a buffer or WAL into a fragment
and only then forgets them, so reading the unflushed rows before the manifest never
misses a row in transit; a row seen in both places is removed by ``dedupe``.

A listed file that cannot be read is quarantined (see ``storage.quarantine``) and the query
runs again without it: it answers from every other file and the unflushed rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import polars as pl

from service import metrics
from service.config import PriorityScope, Settings
from service.errors import field_error
from service.ingest.buffer import Buffer
from service.query.aggregate import combine, pick, priority_partials, select, slot_partials
from service.query.rollups import RollupCache
from service.schema import DAY_MS, METRICS, MINUTE_MS, ROW_SCHEMA
from service.storage.compaction_policy import TOP_LEVEL
from service.storage.fragments import FragmentInfo, rollup_name
from service.storage.quarantine import READ_ERRORS, isolate, unreadable
from service.storage.retention import retained_until
from service.storage.store import Store
from service.storage.tombstones import before
from service.storage.wal import TailReader, list_segments

# a query over more than one UTC day that would scan more not-yet-compacted rows than this
# runs one day at a time: de-duplication then holds one day's rows, not the whole range's
# (a 30-day query over 42 M uncompacted rows peaked at 1.2 GB when run in one piece)
SPLIT_SCAN_ROWS = 1_000_000
# runs of one query: each after quarantining what failed the previous one, or after the
# manifest changed under it (a file it listed retired and deleted meanwhile)
ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class Query:
    metric: str
    user_id: str
    start_ms: int
    end_ms: int
    device_id: str | None = None
    slot: str = "1m"  # the priority slot: "1s" or "1m"
    extremes: bool = False  # partials carry min and max too
    erased_before: int = 0  # the user's rows with a lower seq are erased (see ``tombstones``)


class Reader:
    def __init__(self, settings: Settings, store: Store, buffer: Buffer) -> None:
        self._settings = settings
        self._store = store
        self._buffer = buffer
        self._tails = {name: TailReader(name) for name in METRICS}
        self._rollups = RollupCache(store.fragment_dir, settings.rollup_cache_bytes)
        self._rollups_checked = -1  # the manifest generation the rollup cache was kept to

    @property
    def priority(self) -> Mapping[str, int]:
        return self._settings.device_priority

    @property
    def scope(self) -> PriorityScope:
        return self._settings.priority_scope

    def run(self, q: Query) -> pl.DataFrame | None:
        """The surviving partials per priority slot for ``q`` (see ``query.aggregate``),
        or None when no reading matches. Blocking."""
        started = time.perf_counter()
        self._forget_retired()
        retained = self._store.rollups(q.metric, q.start_ms, q.end_ms, q.user_id)
        if retained and before(self._store.manifest.read().tombstones, q.user_id):
            retained = []  # an erased user's rolled-up days hold nothing they may show
        frame = self._retained(q, retained) if retained else self._salvaging(q)
        metrics.QUERY_SECONDS.observe(time.perf_counter() - started)
        if frame is None or frame.height == 0:
            return None
        return frame

    def _forget_retired(self) -> None:
        """Keep the rollup cache to the files the manifest lists, once per generation."""
        snapshot = self._store.manifest.read()
        if snapshot.generation != self._rollups_checked:
            self._rollups_checked = snapshot.generation
            self._rollups.keep(snapshot.listed())

    def _retained(self, q: Query, retained: list[FragmentInfo]) -> pl.DataFrame | None:
        """``q`` over days past raw retention: their minutes from the rollups, bucket scope
        (no timestamps are left to compare), each minute whole if it starts in the range;
        the range after the last such day as any query."""
        boundary = retained_until(retained)
        if q.slot != "1m":
            until = datetime.fromtimestamp(boundary / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise field_error(
                "interval",
                f"1s buckets need raw readings; before {until} only per-minute rollups are "
                "kept (HR_RETENTION_DAYS)",
            )
        minute = pl.col("minute").dt.epoch("ms")
        rows = pl.concat([self._rollups.user_rows(f.name, q.user_id) for f in retained]).lazy()
        rows = rows.filter((minute >= q.start_ms) & (minute < min(q.end_ms, boundary)))
        if q.device_id is not None:
            rows = rows.filter(pl.col("device_id") == q.device_id)
        names = ["device_id", "sum", "count", *(("min", "max") if q.extremes else ())]
        priority = self._settings.device_priority if q.device_id is None else None
        parts: list[pl.DataFrame | None] = [
            pick(rows.select(pl.col("minute").alias("slot"), *names), priority, "in-memory")
        ]
        if boundary < q.end_ms:
            parts.append(self._salvaging(replace(q, start_ms=boundary)))
        found = [df for df in parts if df is not None and df.height]
        return pl.concat(found) if found else None

    def _salvaging(self, q: Query) -> pl.DataFrame | None:
        """``_frame`` for ``q``; when a read fails, the files to blame are quarantined and
        the query runs again (probing happens only then: the hot path is unchanged)."""
        for attempt in range(1, ATTEMPTS + 1):
            snapshot = self._store.manifest.read()
            generation = snapshot.generation
            # every source of this query drops the rows an erase hid (see ``tombstones``)
            q = replace(q, erased_before=before(snapshot.tombstones, q.user_id))
            try:
                return self._frame(q, self.unflushed(q.metric), observe=attempt == 1)
            except READ_ERRORS:
                if attempt == ATTEMPTS:
                    raise
                listed = self._store.fragments(q.metric, q.start_ms, q.end_ms, q.user_id)
                bad = unreadable(self._store, listed)
                if bad:
                    metrics.QUARANTINED_FILES.inc(len(isolate(self._store, bad)))
                elif self._store.manifest.read().generation == generation:
                    raise  # nothing to blame and nothing changed: a real error
        raise AssertionError("unreachable")

    def _frame(
        self, q: Query, unflushed: list[pl.DataFrame], observe: bool = False
    ) -> pl.DataFrame | None:
        settled, fresh, scanned = self._sources(q, unflushed, observe)
        first_day, last_day = q.start_ms // DAY_MS, (q.end_ms - 1) // DAY_MS
        if scanned > SPLIT_SCAN_ROWS and first_day < last_day:
            # every bucket lies within one UTC day, and so does every reading identity; the
            # unflushed rows read once, before any manifest read, serve every day
            days = [
                self._frame(
                    replace(
                        q,
                        start_ms=max(q.start_ms, d * DAY_MS),
                        end_ms=min(q.end_ms, (d + 1) * DAY_MS),
                    ),
                    unflushed,
                )
                for d in range(first_day, last_day + 1)
            ]
            found = [df for df in days if df is not None and df.height]
            return pl.concat(found) if found else None
        return None if not settled and fresh is None else self._answer(q, settled, fresh)

    def unflushed(self, metric: str) -> list[pl.DataFrame]:
        """Rows not in a listed fragment yet: this worker's buffer, other workers' WALs."""
        others = [
            path
            for worker, paths in list_segments(self._store.wal_dir).items()
            if worker != self._store.worker
            for path in paths
        ]
        return self._buffer.snapshot(metric) + self._tails[metric].read(others)

    def rows(
        self, q: Query, unflushed: list[pl.DataFrame]
    ) -> tuple[pl.LazyFrame | None, pl.LazyFrame | None]:
        """(settled, fresh): the rows of ``q`` from the sources a series reads, compacted
        rows (unique per identity) apart from every other row (``unflushed`` read before
        this call); ``query.aggregate.combine`` makes them one row per identity."""
        tombstones = self._store.manifest.read().tombstones
        q = replace(q, erased_before=before(tombstones, q.user_id))
        settled, fresh, _ = self._sources(q, unflushed, observe=False)
        return (
            self._pick(q, self._scan(settled)) if settled else None,
            None if fresh is None else self._pick(q, fresh),
        )

    def _sources(
        self, q: Query, unflushed: list[pl.DataFrame], observe: bool
    ) -> tuple[list[FragmentInfo], pl.LazyFrame | None, int]:
        """(settled, fresh, scanned): compacted day files, every other row (``unflushed``,
        read before the manifest), and how many rows the not-yet-compacted files hold."""
        fragments = self._store.fragments(q.metric, q.start_ms, q.end_ms, q.user_id)
        if observe:
            metrics.QUERY_FRAGMENTS.observe(len(fragments))
            metrics.QUERY_ROWS.observe(
                sum(df.height for df in unflushed) + sum(f.rows for f in fragments)
            )
        days: set[int] = set()
        settled: list[FragmentInfo] = []
        fresh_paths = []
        scanned = 0
        for f in fragments:
            day = f.min_ts // DAY_MS
            if f.level == TOP_LEVEL and day not in days:  # the day's one file of this user
                days.add(day)
                settled.append(f)
            else:
                fresh_paths.append(self._store.fragment_dir / f.name)
                scanned += f.rows
        fresh = [df.lazy() for df in unflushed]
        if fresh_paths:
            fresh.append(pl.scan_parquet(fresh_paths, schema=ROW_SCHEMA))
        return settled, (pl.concat(fresh) if fresh else None), scanned

    def _answer(
        self, q: Query, settled: list[FragmentInfo], fresh: pl.LazyFrame | None
    ) -> pl.DataFrame:
        priority = self._settings.device_priority if q.device_id is None else None
        scope = self._settings.priority_scope
        if fresh is not None:
            fresh = self._pick(q, fresh)
        # rollups carry no seq: not used while an erase of the user is under way
        rolled = settled and all(f.rollup for f in settled) and q.slot == "1m"
        rolled = rolled and not q.erased_before
        if rolled and (priority is None or scope == "bucket"):
            # rollup rows come from the in-memory cache: no scan left for the streaming engine
            return pick(self._partials(q, settled, fresh), priority, "in-memory")
        rows = combine(self._pick(q, self._scan(settled)) if settled else None, fresh)
        return priority_partials(rows, priority, scope, q.slot, q.extremes)

    # longer than 40 lines: the rollup part and the raw edge and dirty minutes share their bounds
    def _partials(
        self, q: Query, settled: list[FragmentInfo], fresh: pl.LazyFrame | None
    ) -> pl.LazyFrame:
        """Per (minute, device) sums and counts: from the rollups for every whole minute
        of the range that no fresher row touches, from raw rows for the rest."""
        fresh_rows = None if fresh is None else fresh.collect()
        dirty = (
            pl.Series("minute", [], pl.Int64)
            if fresh_rows is None
            else fresh_rows["ts"].dt.truncate("1m").dt.epoch("ms").unique()
        )
        first = -(-q.start_ms // MINUTE_MS) * MINUTE_MS  # the first whole minute
        stop = q.end_ms // MINUTE_MS * MINUTE_MS  # and the end of the last one
        minute = pl.col("minute").dt.epoch("ms")
        whole = (minute >= first) & (minute < stop)
        if dirty.len():
            whole = whole & ~minute.is_in(dirty)
        roll = (
            pl.concat([self._rollups.user_rows(rollup_name(f.name), q.user_id) for f in settled])
            .lazy()
            .filter(whole)
        )
        if q.device_id is not None:
            roll = roll.filter(pl.col("device_id") == q.device_id)
        names = ["device_id", "sum", "count", *(("min", "max") if q.extremes else ())]
        parts = [roll.select(pl.col("minute").alias("slot"), *names)]
        # raw rows: the partial minutes at the edges of the range and the dirty minutes
        ts = pl.col("ts").dt.epoch("ms")
        raw: list[pl.Expr] = []
        if first >= stop:
            raw.append(pl.lit(True))
        else:
            if q.start_ms < first:
                raw.append(ts < first)
            if stop < q.end_ms:
                raw.append(ts >= stop)
        if dirty.len():
            low, high = int(dirty.min()), int(dirty.max()) + MINUTE_MS  # type: ignore[arg-type]
            truncated = pl.col("ts").dt.truncate("1m").dt.epoch("ms")
            raw.append((ts >= low) & (ts < high) & truncated.is_in(dirty))
        settled_rows = (
            self._pick(q, self._scan(settled)).filter(pl.any_horizontal(raw)) if raw else None
        )
        if settled_rows is not None or fresh_rows is not None:
            fresh_lf = None if fresh_rows is None else fresh_rows.lazy()
            parts.append(slot_partials(combine(settled_rows, fresh_lf), "1m", q.extremes))
        return pl.concat(parts)

    def _scan(self, files: list[FragmentInfo]) -> pl.LazyFrame:
        return pl.scan_parquet(
            [self._store.fragment_dir / f.name for f in files], schema=ROW_SCHEMA
        )

    @staticmethod
    def _pick(q: Query, lf: pl.LazyFrame) -> pl.LazyFrame:
        picked = select(lf, q.user_id, q.start_ms, q.end_ms, q.device_id)
        return picked.filter(pl.col("seq") >= q.erased_before) if q.erased_before else picked
