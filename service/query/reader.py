"""The query path: unflushed rows first, the manifest (and a shared table) second, one
Polars lazy plan.

Order matters: a flush moves rows from a buffer or WAL into a fragment
and only then forgets them, so reading the unflushed rows before the manifest never
misses a row in transit; a row seen in both places is removed by ``dedupe``.

A listed file that cannot be read is quarantined (see ``storage.quarantine``) and the query
runs again without it: it answers from every other file and the unflushed rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl

from service import metrics
from service.config import PriorityScope, Settings
from service.errors import field_error
from service.ingest.buffer import Buffer
from service.query.aggregate import SMALL, combine, pick, priority_partials
from service.query.minute_path import MinutePath
from service.query.rollups import RollupCache
from service.query.sources import Query, Sources, query_rows, scan, settled_rows
from service.schema import DAY_MS, METRICS
from service.storage.compaction_policy import TOP_LEVEL
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


class Reader:
    def __init__(
        self, settings: Settings, store: Store, buffer: Buffer, *, merging: bool = True
    ) -> None:
        """``merging=False`` answers every query by the plain path (rows de-duplicated,
        then partials): what the partial path is checked against."""
        self._settings = settings
        self._store = store
        self._buffer = buffer
        self._tails = {name: TailReader(name) for name in METRICS}
        self._rollups = RollupCache(store.fragment_dir, settings.rollup_cache_bytes)
        # the spanned partials of not-yet-compacted fragments (see ``query.minutes``)
        self._minutes = MinutePath(store, self._rollups, settings.rollup_cache_bytes)
        self._merging = merging
        self._caches_checked = -1  # the manifest generation the caches were kept to

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
        retained = self._rolled_up(q)
        if retained and before(self._store.manifest.read().tombstones, q.user_id):
            retained = None  # an erased user's rolled-up days hold nothing they may show
        frame = self._retained(q, *retained) if retained else self._salvaging(q)
        metrics.QUERY_SECONDS.observe(time.perf_counter() - started)
        if frame is None or frame.height == 0:
            return None
        return frame

    def erased_before(self, user_id: str) -> int:
        """The sequence below which ``user_id``'s rows are erased (0: none are)."""
        return before(self._store.manifest.read().tombstones, user_id)

    def _forget_retired(self) -> None:
        """Keep the caches to the files the manifest lists, once per generation."""
        snapshot = self._store.manifest.read()
        if snapshot.generation != self._caches_checked:
            self._caches_checked = snapshot.generation
            listed = snapshot.listed()
            self._rollups.keep(listed)
            self._minutes.keep(listed)

    def _rolled_up(self, q: Query) -> tuple[int, pl.DataFrame] | None:
        """The days of ``q`` past raw retention (listed in the manifest, or a shared table's):
        the end of the last one and ``q.user_id``'s rollup rows; None when there are none."""
        listed = self._store.rollups(q.metric, q.start_ms, q.end_ms, q.user_id)
        if not listed:
            return self._store.table_retained(q.metric, q.start_ms, q.end_ms, q.user_id)
        rows = pl.concat(self._rollups.files_rows([f.name for f in listed], q.user_id))
        return retained_until(listed), rows

    def _retained(self, q: Query, boundary: int, rolled: pl.DataFrame) -> pl.DataFrame | None:
        """``q`` over days past raw retention (up to ``boundary``, the user's ``rolled`` rows):
        their minutes from the rollups, bucket scope (no timestamps are left to compare),
        each minute whole if it starts in the range; the range after as any query."""
        if q.slot != "1m":
            until = datetime.fromtimestamp(boundary / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise field_error(
                "interval",
                f"1s buckets need raw readings; before {until} only per-minute rollups are "
                "kept (HR_RETENTION_DAYS)",
            )
        minute = pl.col("minute").dt.epoch("ms")
        rows = rolled.lazy().filter((minute >= q.start_ms) & (minute < min(q.end_ms, boundary)))
        if q.device_id is not None:
            rows = rows.filter(pl.col("device_id") == q.device_id)
        names = ["device_id", "sum", "count", *(("min", "max") if q.extremes else ())]
        priority = self._settings.device_priority if q.device_id is None else None
        parts: list[pl.DataFrame | None] = [
            pick(rows.select(pl.col("minute").alias("slot"), *names), priority, SMALL)
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
        sources = self._sources(q, unflushed, observe)
        shared = sources.shared is not None or sources.shared_days
        if not (sources.settled or sources.loose or unflushed or shared):
            return None
        if self._mergeable(q, sources):
            priority = self._settings.device_priority if q.device_id is None else None
            return self._minutes.partials(q, sources, priority)
        first_day, last_day = q.start_ms // DAY_MS, (q.end_ms - 1) // DAY_MS
        if sources.scanned > SPLIT_SCAN_ROWS and first_day < last_day:
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
        return self._answer(q, sources)

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
        sources = self._sources(q, unflushed, observe=False)
        fresh = self._fresh(sources)
        return (
            settled_rows(self._store, q, sources.settled, sources.shared_days),
            None if fresh is None else query_rows(q, fresh),
        )

    def _sources(self, q: Query, unflushed: list[pl.DataFrame], observe: bool) -> Sources:
        fragments = self._store.fragments(q.metric, q.start_ms, q.end_ms, q.user_id)
        if observe:
            metrics.QUERY_FRAGMENTS.observe(len(fragments))
            metrics.QUERY_ROWS.observe(
                sum(df.height for df in unflushed) + sum(f.rows for f in fragments)
            )
        days: set[int] = set()
        sources = Sources(unflushed=unflushed)
        for f in fragments:
            day = f.min_ts // DAY_MS
            if f.level == TOP_LEVEL and day not in days:  # the day's one file of this user
                days.add(day)
                sources.settled.append(f)
            else:
                sources.loose.append(f)
                sources.scanned += f.rows
        sources.shared, sources.shared_days = self._store.table_sources(
            q.metric, q.start_ms, q.end_ms, q.user_id
        )
        return sources

    def _fresh(self, sources: Sources) -> pl.LazyFrame | None:
        """The rows of ``sources`` not in a compacted day file, unflushed first."""
        fresh = [df.lazy() for df in sources.unflushed]
        if sources.loose:
            fresh.append(scan(self._store.fragment_dir, sources.loose))
        if sources.shared is not None:
            fresh.append(sources.shared)
        return pl.concat(fresh) if fresh else None

    def _answer(self, q: Query, sources: Sources) -> pl.DataFrame:
        """The plain path: every row of the range, de-duplicated, then partials."""
        priority = self._settings.device_priority if q.device_id is None else None
        fresh = self._fresh(sources)
        if fresh is not None:
            fresh = query_rows(q, fresh)
        rows = combine(settled_rows(self._store, q, sources.settled, sources.shared_days), fresh)
        return priority_partials(rows, priority, self.scope, q.slot, q.extremes)

    def _mergeable(self, q: Query, sources: Sources) -> bool:
        """Whether per-minute partials can answer ``q`` (see ``query.minutes``): minute
        slots, priority decided per bucket, a rollup beside every compacted day file, and no
        erase of the user under way (rollups and partials carry no ``seq``)."""
        per_bucket = q.device_id is not None or self.scope == "bucket"
        return (
            self._merging
            and per_bucket
            and q.slot == "1m"
            and not q.erased_before
            and all(f.rollup for f in sources.settled)
        )
