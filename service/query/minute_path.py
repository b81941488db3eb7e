"""The partial path of minute-slot queries: each source's per-minute partials added up,
raw rows read only where they must be (see ``query.minutes`` for when partials add up).

Sources and what each gives: a compacted day file its rollup (cached by ``RollupCache``),
a not-yet-compacted fragment its spanned partials (read from its spans file, or computed
once per worker for a flushed one; cached under the file's name), an unflushed frame its
user's spanned partials (kept per frame and user, see ``UserSpans``), a shared table's rows
theirs per query. The files' minutes, merged and picked, are kept per set of files
(``FileAnswers``): a query merges only the minutes the unflushed rows touch.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import replace

import polars as pl

from service.partials import SPANNED, spanned
from service.query.aggregate import PLAIN, SMALL, combine, pick, slot_partials
from service.query.minutes import (
    UnflushedSpans,
    add_up,
    files_key,
    flag_meetings,
    gather,
    loose_partials,
    merge,
    minute_partials,
    utc_days,
)
from service.query.rollups import FileAnswers, RollupCache
from service.query.sources import Query, Sources, query_rows, scan, settled_rows
from service.schema import DAY_MS, MINUTE_MS, ROLLUP_SCHEMA
from service.storage.fragments import FragmentInfo, rollup_name
from service.storage.store import Store

# a series within at most this many UTC days has its files' minutes kept (a month at two
# devices: ~90,000 rows, ~6 MB); a longer one merges per query, as it did before
KEPT_SPAN_MS = 32 * DAY_MS
_NO_SPANS = pl.DataFrame(schema=SPANNED)  # built once: an empty frame of many columns costs
_NO_PICKS = _NO_SPANS.select(minute_partials())


class MinutePath:
    def __init__(self, store: Store, rollups: RollupCache, budget_bytes: int) -> None:
        self._store = store
        self._directory = store.fragment_dir
        self._rollups = rollups
        self._loose = RollupCache(store.fragment_dir, budget_bytes, loose_partials)
        self._unflushed = UnflushedSpans(budget_bytes // 32)
        # the spans and picks of a user's files (see ``_file_minutes``)
        self._answers = FileAnswers(budget_bytes // 8)
        # the merged minutes of files and the unflushed rows named by their serials
        self._merged = FileAnswers(budget_bytes // 16)

    def keep(self, listed: Container[str]) -> None:
        """Forget the partials of files the manifest no longer lists."""
        self._loose.keep(listed)
        self._answers.keep(listed)
        self._merged.keep(listed)

    def partials(
        self, q: Query, sources: Sources, priority: Mapping[str, int] | None
    ) -> pl.DataFrame:
        """``q``'s partials per (minute, device): the sources' per-minute partials added up
        where they are exact (see ``query.minutes``), raw rows de-duplicated for the dirty
        minutes and for the partial minutes at the edges of the range."""
        files = [*sources.settled, *sources.loose]
        if (
            sources.shared is not None
            or sources.shared_days
            or not files
            or utc_days(q)[1] - utc_days(q)[0] > KEPT_SPAN_MS
        ):
            return self._partials(q, sources, priority, self._unflushed.with_shared(q, sources))
        unflushed = self._unflushed.of_user(q, sources)
        if not (sources.loose or unflushed[0]):
            # compacted days alone: their rollups go straight to the pick, nothing to keep
            return self._partials(q, sources, priority, [])
        return self._over_files(q, sources, priority, unflushed)

    def _over_files(
        self,
        q: Query,
        sources: Sources,
        priority: Mapping[str, int] | None,
        unflushed: tuple[list[pl.DataFrame], list[int | None]],
    ) -> pl.DataFrame:
        """``q`` over listed files and unflushed rows: per whole minute of the range, the
        files' pick where no unflushed row of the user lies, else the merged minute's (see
        ``_merged_minutes``); raw rows for the minutes the range cuts."""
        spans, picked = self._file_minutes(q, sources, priority)
        touched, merged = self._merged_minutes(q, sources, priority, spans, *unflushed)
        first = -(-q.start_ms // MINUTE_MS) * MINUTE_MS  # the first whole minute
        stop = q.end_ms // MINUTE_MS * MINUTE_MS  # and the end of the last one
        slot = pl.col("slot").dt.epoch("ms")
        inside = (slot >= first) & (slot < stop)
        names = _names(q)
        plans = [merged.lazy().filter(inside).select(names)]
        if picked.height:
            alone = picked.lazy().filter(inside)
            if touched.height:  # a join costs ~4 hand-offs to Polars' thread, even of nothing
                alone = alone.join(touched.lazy(), left_on=slot, right_on="m", how="anti")
            plans.insert(0, alone.select(names))
        found = pl.collect_all(plans, engine=SMALL, optimizations=PLAIN)
        # the minutes the range cuts (it starts or ends in one): raw rows within the range
        cut = [m // MINUTE_MS * MINUTE_MS for m in (q.start_ms, q.end_ms) if m % MINUTE_MS]
        if cut:
            raw = self._raw_partials(q, sources, pl.Series(cut, dtype=pl.Int64).unique())
            if raw is not None:
                found.append(pick(raw.select(names), priority, SMALL))
        return pl.concat(found)

    # longer than 40 lines: one plan collected once for the merge, then the dirty minutes'
    # raw rows; split, each part would need the other's frames
    def _merged_minutes(
        self,
        q: Query,
        sources: Sources,
        priority: Mapping[str, int] | None,
        spans: pl.DataFrame,
        unflushed: list[pl.DataFrame],
        marks: list[int | None],
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(``m``: every minute holding an unflushed row of the user (epoch ms), the picks of
        those minutes): the files' minutes (``spans``) and the unflushed rows' merged, raw
        rows de-duplicated for the dirty ones. Kept per set of files and the serials of the
        user's unflushed partials (see ``UserSpans``): for any range within the same UTC
        days, and while other users' readings arrive. ``unflushed``, ``marks``: see
        ``UnflushedSpans.of_user``."""
        key = None if None in marks else (files_key(q, sources, priority), *marks)
        kept = self._merged.get(key) if key is not None else None
        if kept is not None:
            touched_df, picks = kept
            return touched_df, picks
        minute = pl.col("minute").dt.epoch("ms")
        lo, hi = utc_days(q)
        fresh = pl.concat([_NO_SPANS.lazy(), *(df.lazy() for df in unflushed)])
        fresh = fresh.filter((minute >= lo) & (minute < hi))
        if q.device_id is not None:
            fresh = fresh.filter(pl.col("device_id") == q.device_id)
        touched = fresh.select(minute.alias("m")).unique()
        mine = spans.lazy().join(touched, left_on=minute, right_on="m", how="semi")
        ordered = flag_meetings(pl.concat([mine, fresh]))
        dirty = ordered.filter(pl.col("bad")).select(minute.alias("m")).unique()
        added = add_up(ordered).select(minute_partials())
        touched_df, dirty_df, added_df = pl.collect_all(
            [touched, dirty, added], engine=SMALL, optimizations=PLAIN
        )
        slot = pl.col("slot").dt.epoch("ms")
        parts = [added_df.lazy()]
        if dirty_df.height:  # else the anti-join would keep every row, at ~4 hand-offs
            parts = [parts[0].join(dirty_df.lazy(), left_on=slot, right_on="m", how="anti")]
            low, high = int(dirty_df["m"].min()), int(dirty_df["m"].max()) + MINUTE_MS  # type: ignore[arg-type]
            whole = replace(q, start_ms=low, end_ms=high, extremes=True)
            raw = self._raw_partials(whole, sources, dirty_df["m"])
            if raw is not None:
                parts.append(raw.select(added_df.columns))
        picks = pick(pl.concat(parts), priority, SMALL)
        if key is not None:
            self._merged.put(
                key, (touched_df, picks), [f.name for f in (*sources.settled, *sources.loose)]
            )
        return touched_df, picks

    def _file_minutes(
        self, q: Query, sources: Sources, priority: Mapping[str, int] | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(spans, picks) of every minute ``q``'s listed files hold for its user (and
        device): one exact, clean ``SPANNED`` row per (minute, device), and the minute's
        pick. Computed once per set of files (see ``FileAnswers``) for the range's UTC days."""
        files = [*sources.settled, *sources.loose]
        key = files_key(q, sources, priority)
        kept = self._answers.get(key)
        if kept is not None:
            spans, picks = kept
            return spans, picks
        lo, hi = utc_days(q)  # the range's whole UTC days: a window moving within reuses them
        whole = replace(q, start_ms=lo, end_ms=hi, extremes=True)
        alone = replace(sources, unflushed=[])
        rollups, per_file = self._file_partials(whole, alone)
        if not any(df.height for df in (*rollups, *per_file)):
            # no file holds a row of the user in these days (a new user or device, a day
            # not flushed yet): nothing to merge, where the plans on empty frames cost ~2.5 ms
            return _NO_SPANS, _NO_PICKS
        minute = pl.col("minute").dt.epoch("ms")
        parts = gather(rollups, per_file).filter((minute >= lo) & (minute < hi))
        if q.device_id is not None:
            parts = parts.filter(pl.col("device_id") == q.device_id)
        out, dirty = merge(parts.collect(engine=SMALL), spans=True)
        found = [out]
        if dirty.len():
            raw = self._raw_partials(whole, alone, dirty, spans=True)
            if raw is not None:
                found.append(raw.select(out.columns).collect(engine=SMALL))
        spans = pl.concat(found)
        kept = spans, pick(spans.lazy().select(minute_partials()), priority, SMALL)
        self._answers.put(key, kept, [f.name for f in files])
        return kept

    def _file_partials(
        self, q: Query, sources: Sources
    ) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
        """The user's rollup rows of each compacted file, and partials of each loose one,
        in the order of ``sources.settled`` and ``sources.loose``."""
        return (
            self._rollups.files_rows([rollup_name(f.name) for f in sources.settled], q.user_id),
            self._loose.files_rows([f.name for f in sources.loose], q.user_id),
        )

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
        rollups, per_file = self._file_partials(q, sources)
        every = rollups + [day.rollup for day in sources.shared_days]  # a store has one kind
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
            raw_parts = self._raw_partials(q, sources, raw)
            if raw_parts is not None:
                found.append(raw_parts.select(out.columns))
        return pick(pl.concat(found).select(_names(q)), priority, SMALL)

    def _raw_partials(
        self, q: Query, sources: Sources, raw: pl.Series, *, spans: bool = False
    ) -> pl.LazyFrame | None:
        """Partials of the minutes ``raw`` (epoch ms) from raw rows, de-duplicated, read
        from the sources whose partials hold those minutes; with ``spans``, ``SPANNED``."""
        rollups, per_file = self._file_partials(q, sources)
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
        rows = combine(settled, fresh)
        return spanned(rows) if spans else slot_partials(rows, "1m", extremes=True)

    def _file_rows(self, q: Query, files: list[FragmentInfo]) -> pl.LazyFrame:
        return query_rows(q, scan(self._directory, files))


def _names(q: Query) -> list[str]:
    """The columns of ``q``'s partials."""
    return ["slot", "device_id", "sum", "count", *(("min", "max") if q.extremes else ())]
