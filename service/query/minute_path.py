"""The partial path of minute-slot queries: each source's per-minute partials added up,
raw rows read only where they must be (see ``query.minutes`` for when partials add up).

Sources and what each gives: a compacted day file its rollup (cached by ``RollupCache``),
a not-yet-compacted fragment its spanned partials (computed once per worker, cached under
the file's name), an unflushed frame its user's spanned partials (kept per frame once a
query finds it unchanged, see ``SteadyFrames``), a shared table's rows theirs per query.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import replace

import polars as pl

from service.query.aggregate import SMALL, combine, pick, slot_partials
from service.query.minutes import (
    SteadyFrames,
    file_partials,
    gather,
    merge,
    minute_partials,
    spanned,
)
from service.query.rollups import FileAnswers, RollupCache
from service.query.sources import Query, Sources, query_rows, scan, settled_rows
from service.schema import METRICS, MINUTE_MS, ROLLUP_SCHEMA
from service.storage.fragments import FragmentInfo, rollup_name
from service.storage.store import Store


class MinutePath:
    def __init__(self, store: Store, rollups: RollupCache, budget_bytes: int) -> None:
        self._store = store
        self._directory = store.fragment_dir
        self._rollups = rollups
        self._loose = RollupCache(store.fragment_dir, budget_bytes, file_partials)
        self._steady = {name: SteadyFrames() for name in METRICS}
        self._answers = FileAnswers(budget_bytes // 4)

    def keep(self, listed: Container[str]) -> None:
        """Forget the partials of files the manifest no longer lists."""
        self._loose.keep(listed)
        self._answers.keep(listed)

    def partials(
        self, q: Query, sources: Sources, priority: Mapping[str, int] | None
    ) -> pl.DataFrame:
        """``q``'s partials per (minute, device): the sources' per-minute partials added up
        where they are exact (see ``query.minutes``), raw rows de-duplicated for the dirty
        minutes and for the partial minutes at the edges of the range."""
        unflushed = self._unflushed_spans(q, sources)
        if self._files_alone(q, sources, unflushed):
            return self._file_answer(q, sources, priority)
        return self._partials(q, sources, priority, unflushed)

    def _files_alone(self, q: Query, sources: Sources, unflushed: list[pl.DataFrame]) -> bool:
        """Whether ``q``'s answer comes from listed files alone, whole minutes only: no
        shared table, no cut minute, no unflushed row of the user in the range."""
        if sources.shared is not None or sources.shared_days:
            return False
        if not (sources.settled or sources.loose) or q.start_ms % MINUTE_MS or q.end_ms % MINUTE_MS:
            return False
        minute = pl.col("minute").dt.epoch("ms")
        inside = (minute >= q.start_ms) & (minute < q.end_ms)
        return not any(df.height and df.filter(inside).height for df in unflushed)

    def _file_answer(
        self, q: Query, sources: Sources, priority: Mapping[str, int] | None
    ) -> pl.DataFrame:
        """``q``'s partials from the picks of every minute its files hold, computed once per
        set of files (see ``FileAnswers``)."""
        files = [*sources.settled, *sources.loose]
        key = (
            q.metric,
            q.user_id,
            q.device_id,
            q.erased_before,
            priority is not None,
            tuple(f.name for f in sources.settled),
            tuple(f.name for f in sources.loose),
        )
        answer = self._answers.get(key)
        if answer is None:
            lo = min(f.min_ts for f in files) // MINUTE_MS * MINUTE_MS
            hi = (max(f.max_ts for f in files) // MINUTE_MS + 1) * MINUTE_MS
            whole = replace(q, start_ms=lo, end_ms=hi, extremes=True)
            answer = self._partials(whole, replace(sources, unflushed=[]), priority, [])
            self._answers.put(key, answer, [f.name for f in files])
        slot = pl.col("slot").dt.epoch("ms")
        return answer.filter((slot >= q.start_ms) & (slot < q.end_ms)).select(_names(q))

    # longer than 40 lines: the one place deciding, per minute, between sources' partials
    # and raw rows; its branches share the range's bounds and the sources' frames
    def _partials(
        self,
        q: Query,
        sources: Sources,
        priority: Mapping[str, int] | None,
        unflushed: list[pl.DataFrame],
    ) -> pl.DataFrame:
        first = -(-q.start_ms // MINUTE_MS) * MINUTE_MS  # the first whole minute
        stop = q.end_ms // MINUTE_MS * MINUTE_MS  # and the end of the last one
        rollups = [self._rollups.user_rows(rollup_name(f.name), q.user_id) for f in sources.settled]
        every = rollups + [day.rollup for day in sources.shared_days]  # a store has one kind
        # each loose file's partials, in the order of ``sources.loose``
        per_file = [self._loose.user_rows(f.name, q.user_id) for f in sources.loose]
        spans = [df for df in per_file + unflushed if df.height]
        minute = pl.col("minute").dt.epoch("ms")
        near = (minute >= q.start_ms // MINUTE_MS * MINUTE_MS) & (minute < q.end_ms)
        if q.device_id is not None:
            near = near & (pl.col("device_id") == q.device_id)
        whole = (minute >= first) & (minute < stop)
        rolled = (pl.concat(every) if every else pl.DataFrame(schema=ROLLUP_SCHEMA)).lazy()
        if not spans and first == q.start_ms and stop == q.end_ms:
            # compacted days only, cut nowhere: one rollup per day, so no minute has two
            # sources and none is dirty; the rollup rows go straight to the pick
            lf = rolled.filter(near).select(minute_partials())
            return pick(lf.select(_names(q)), priority, SMALL)
        fresh = gather([], spans).filter(near).collect(engine=SMALL)
        # a whole minute only a rollup holds goes straight to the pick; the others (touched by
        # a fresher source, or cut by the range) are merged: the cost follows the fresh rows
        parts, found = fresh, []
        if every:
            touched = fresh["minute"].unique().implode()
            alone = whole & ~pl.col("minute").is_in(touched)
            rolled_near = rolled.filter(near).collect(engine=SMALL)
            parts = pl.concat(
                [gather([rolled_near.filter(~alone)], []).collect(engine=SMALL), fresh]
            )
            found.append(rolled_near.lazy().filter(alone).select(minute_partials()))
        out, dirty = merge(parts.filter(whole))
        found.append(out.lazy())
        raw = pl.concat([dirty, parts.filter(~whole)["minute"].dt.epoch("ms")]).unique()
        if raw.len():
            raw_parts = self._raw_partials(q, sources, raw, rollups, per_file)
            if raw_parts is not None:
                found.append(raw_parts.select(out.columns))
        return pick(pl.concat(found).select(_names(q)), priority, SMALL)

    def _unflushed_spans(self, q: Query, sources: Sources) -> list[pl.DataFrame]:
        """The user's spanned partials of the unflushed rows (and a shared table's): kept
        per steady frame, computed for the rest."""
        steady, changing = self._steady[q.metric].split(sources.unflushed, q.user_id)
        rows = [df.lazy() for df in changing]
        if sources.shared is not None:
            rows.append(sources.shared)
        if not rows:
            return steady
        changed = query_rows(q, pl.concat(rows)).collect(engine=SMALL)
        if not changed.height:
            return steady
        return [*steady, spanned(changed.lazy()).collect(engine=SMALL)]

    def _raw_partials(
        self,
        q: Query,
        sources: Sources,
        raw: pl.Series,
        rollups: list[pl.DataFrame],
        per_file: list[pl.DataFrame],
    ) -> pl.LazyFrame | None:
        """Partials of the minutes ``raw`` (epoch ms) from raw rows, de-duplicated, read
        from the sources whose partials hold those minutes (``rollups`` and ``per_file``
        pair with ``sources.settled`` and ``sources.loose``)."""
        ts = pl.col("ts").dt.epoch("ms")
        low, high = int(raw.min()), int(raw.max()) + MINUTE_MS  # type: ignore[arg-type]
        wanted = (ts >= low) & (ts < high)
        wanted = wanted & pl.col("ts").dt.truncate("1m").dt.epoch("ms").is_in(raw.implode())

        def holds(frame: pl.DataFrame) -> bool:
            return bool(frame["minute"].dt.epoch("ms").is_in(raw.implode()).any())

        files = [f for f, r in zip(sources.settled, rollups, strict=True) if holds(r)]
        days = [day for day in sources.shared_days if holds(day.rollup)]
        loose = [f for f, r in zip(sources.loose, per_file, strict=True) if holds(r)]
        unflushed = [df.lazy() for df in sources.unflushed]
        if sources.shared is not None:
            unflushed.append(sources.shared)
        rest = [query_rows(q, pl.concat(unflushed))] if unflushed else []
        if loose:
            rest.append(self._file_rows(q, loose))
        settled = settled_rows(self._store, q, files, days)
        settled = None if settled is None else settled.filter(wanted)
        fresh = pl.concat(rest).filter(wanted) if rest else None
        if settled is None and fresh is None:
            return None
        return slot_partials(combine(settled, fresh), "1m", extremes=True)

    def _file_rows(self, q: Query, files: list[FragmentInfo]) -> pl.LazyFrame:
        return query_rows(q, scan(self._directory, files))


def _names(q: Query) -> list[str]:
    """The columns of ``q``'s partials."""
    return ["slot", "device_id", "sum", "count", *(("min", "max") if q.extremes else ())]
