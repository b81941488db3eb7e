"""Compaction: merge many small fragments into few sorted per-day files.

Which files are due, and the levels they move through, is ``compaction_policy``'s
business; this module does the merging. A day merge de-duplicates by reading identity
(the highest ``seq`` wins) and sorts by (user_id, ts) so that row-group statistics prune
a one-user query to a few row groups.

Memory is bounded by ``max_rows`` input rows per step, not by the size of a day: a
level-0 merge takes at most that many rows (oldest files first; the rest waits for the
next merge), and a day merge cuts the day's user ids into ranges of at most that many
input rows (a single user's day is never split) and merges one range at a time into its
own level-2 file. A day's level-2 files have disjoint user ranges covering every id, so a
one-user query reads exactly one of them. Each level-2 file gets a per-minute rollup
(see ``fragments``) from the same de-duplicated rows, so queries read 1 row per device
and minute instead of up to 60 (or 600 at 10 Hz) for every minute nothing fresher has
touched. Each level-1 file gets a spans file (see ``fragments``): the per-minute partials a
query takes from a not-yet-compacted file, which it would otherwise compute from every row
of the file (up to ``max_rows``) each time its worker's cache has let them go.

One compactor runs at a time across all processes (a non-blocking file lock elects it).
Each merge is one manifest change that lists the outputs and retires the inputs; retired
files are deleted after ``grace_s`` so that queries already running keep their files.
A pass also deletes what a killed pass left behind (see ``orphans``), and an input it
cannot read is quarantined (see ``quarantine``) and the merge done without it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial

import polars as pl
from filelock import FileLock, Timeout

from service.config import Settings
from service.partials import rollup, spans_of
from service.schema import DAY_MS, IDENTITY, ROW_SCHEMA
from service.storage.compaction_policy import TOP_LEVEL, by_day, day_due, level0_due
from service.storage.files import is_held, private_lock, unlink_quietly
from service.storage.fragments import (
    FragmentInfo,
    rollup_name,
    spans_name,
    write_rollup,
    write_spans,
)
from service.storage.orphans import sweep
from service.storage.quarantine import merge_readable
from service.storage.retention import Retention, demoted_days, must_merge
from service.storage.retention import apply as expire
from service.storage.store import Store
from service.storage.tombstones import live

log = logging.getLogger("service.storage")

_DEFAULTS = Settings()  # callers with settings of their own pass those values


@dataclass(slots=True)
class Report:
    files_in: int = 0
    files_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0  # rows dropped: same identity and value as the row kept
    replaced: int = 0  # rows dropped: a later write of the identity changed the value
    purged: int = 0
    orphans: int = 0  # unlisted files a killed writer left, deleted
    quarantined: int = 0  # unreadable inputs (and companions) moved out of the way
    expired: int = 0  # raw files past HR_RETENTION_DAYS retired (their rollups kept)
    rollups_expired: int = 0  # rollups past HR_ROLLUP_RETENTION_DAYS retired


def compact(
    store: Store,
    *,
    min_files: int = _DEFAULTS.compact_min_files,
    grace_s: float = _DEFAULTS.compact_grace_s,
    force: bool = False,
    max_rows: int = _DEFAULTS.compact_max_rows,
    retention: Retention = Retention(),  # noqa: B008 (immutable)
) -> Report | None:
    """Run one compaction pass; None when another process is compacting.

    With ``force`` every day is merged down to a single level-2 file. Days past
    ``retention`` are merged whatever their files (their rollups must be whole), then
    expired (see ``retention``).
    """
    lock = compaction_lock(store)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    try:
        report = Report()
        _purge(store, grace_s, report)
        report.orphans += len(sweep(store, grace_s))
        level0 = [f for f in store.manifest.read().fragments if f.level == 0]
        by_metric: dict[str, list[FragmentInfo]] = defaultdict(list)
        for f in level0:
            by_metric[f.metric].append(f)
        cutoff = retention.raw_cutoff()
        for metric, group in by_metric.items():
            demoted = demoted_days(store.manifest.read(), metric)
            while level0_due(len(group), min_files, force or must_merge(group, demoted, cutoff)):
                batch, group = _take(group, max_rows)
                merge = partial(_merge_level0, store, metric, report=report)
                report.quarantined += merge_readable(store, batch, merge)
        _merge_days(store, report, min_files, force, cutoff, max_rows)
        report.expired, report.rollups_expired = expire(store, retention)
        return report
    finally:
        lock.release()


def _merge_days(
    store: Store, report: Report, min_files: int, force: bool, cutoff: int | None, max_rows: int
) -> None:
    """Merge the days that are due (with ``force`` all), and those with rows before the
    retention ``cutoff``; never a day already rolled up for good (retention drops files
    that arrive for it)."""
    snapshot = store.manifest.read()
    for (metric, day), group in by_day(snapshot.fragments).items():
        if day in demoted_days(snapshot, metric):
            continue
        if day_due(group, min_files, force or must_merge(group, set(), cutoff)):
            merge = partial(_merge_day, store, metric, report=report, max_rows=max_rows)
            report.quarantined += merge_readable(store, group, merge)


def compaction_lock(store: Store) -> FileLock:
    """The lock that elects the one compactor (and that backups hold)."""
    return private_lock(store.root / "compaction.lock")


def is_compacting(store: Store) -> bool:
    return is_held(compaction_lock(store))


def _take(
    files: list[FragmentInfo], max_rows: int
) -> tuple[list[FragmentInfo], list[FragmentInfo]]:
    """The oldest files holding at most ``max_rows`` rows (at least one file), the rest."""
    rows = 0
    for i, f in enumerate(files):
        rows += f.rows
        if rows > max_rows and i:
            return files[:i], files[i:]
    return files, []


def _scan(store: Store, files: list[FragmentInfo]) -> pl.LazyFrame:
    # erased rows are not carried into a merge's output (see ``erasure``)
    lf = pl.scan_parquet([store.fragment_dir / f.name for f in files], schema=ROW_SCHEMA)
    return live(lf, store.manifest.read().tombstones)


def _dedupe_sorted(lf: pl.LazyFrame, report: Report) -> pl.DataFrame:
    """One row per identity (the highest ``seq``), sorted by (user_id, ts); counts drops."""
    value = pl.col("value")
    latest = (
        lf.group_by(*IDENTITY)
        .agg(
            value.sort_by("seq").last(),
            pl.col("seq").max(),
            pl.len().alias("n"),
            value.n_unique().alias("k"),
        )
        .collect(engine="streaming")
    )
    counts = latest.select((pl.col("n") - pl.col("k")).sum(), (pl.col("k") - 1).sum()).row(0)
    report.duplicates += int(counts[0] or 0)
    report.replaced += int(counts[1] or 0)
    return latest.select(*ROW_SCHEMA).sort("user_id", "ts")


def _merge_level0(store: Store, metric: str, files: list[FragmentInfo], *, report: Report) -> None:
    # de-duplicated while streaming from the files: only the surviving rows are held
    rows = _dedupe_sorted(_scan(store, files), report)
    day = (pl.col("ts").dt.epoch("ms") // DAY_MS).alias("day")
    outputs: list[FragmentInfo] = []
    try:
        for part in rows.with_columns(day).partition_by("day", maintain_order=True):
            part = part.drop("day")
            outputs.append(store.write(part, metric, 1))
            # what a query would compute from the whole file on every cache miss
            outputs[-1] = write_spans(spans_of(part), store.fragment_dir, outputs[-1])
    except BaseException:
        _unlink(store, outputs)
        raise
    _swap(store, files, outputs, report)


def _merge_day(
    store: Store, metric: str, files: list[FragmentInfo], *, report: Report, max_rows: int
) -> None:
    users = (
        _scan(store, files)
        .group_by("user_id")
        .agg(pl.len())
        .sort("user_id")
        .collect(engine="streaming")
    )
    outputs: list[FragmentInfo] = []
    try:
        for lo, hi in user_ranges(users["user_id"].to_list(), users["len"].to_list(), max_rows):
            inputs = [f for f in files if f.overlaps(lo, hi)]
            rows = _dedupe_sorted(_scan(store, inputs).filter(_in_range(lo, hi)), report)
            outputs.append(replace(store.write(rows, metric, TOP_LEVEL), user_lo=lo, user_hi=hi))
            outputs[-1] = write_rollup(rollup(rows), store.fragment_dir, outputs[-1])
            del rows
    except BaseException:
        _unlink(store, outputs)
        raise
    _swap(store, files, outputs, report)


def user_ranges(
    users: list[str], counts: list[int], max_rows: int
) -> list[tuple[str | None, str | None]]:
    """Cut sorted ``users`` (with their row counts) into ``[lo, hi)`` ranges of at most
    ``max_rows`` rows (one user may exceed it alone); together they cover every id."""
    starts: list[str] = []
    rows = 0
    for user, count in zip(users, counts, strict=True):
        if rows and rows + count > max_rows:
            starts.append(user)
            rows = 0
        rows += count
    bounds: list[str | None] = [None, *starts, None]
    return list(itertools.pairwise(bounds))


def _in_range(lo: str | None, hi: str | None) -> pl.Expr:
    user = pl.col("user_id")
    keep = pl.lit(True)
    if lo is not None:
        keep = keep & (user >= lo)
    if hi is not None:
        keep = keep & (user < hi)
    return keep


def _unlink(store: Store, infos: list[FragmentInfo]) -> None:
    names = [name for f in infos for name in (f.name, rollup_name(f.name), spans_name(f.name))]
    unlink_quietly([store.fragment_dir / name for name in names])


def _swap(
    store: Store, inputs: list[FragmentInfo], outputs: list[FragmentInfo], report: Report
) -> None:
    try:
        store.manifest.commit(add=outputs, remove=[f.name for f in inputs], retire=True)
    except BaseException:
        _unlink(store, outputs)
        raise
    report.files_in += len(inputs)
    report.files_out += len(outputs)
    report.rows_in += sum(f.rows for f in inputs)
    report.rows_out += sum(f.rows for f in outputs)
    rows_in, rows_out = sum(f.rows for f in inputs), sum(f.rows for f in outputs)
    log.info(
        "compacted %d files (%d rows) into %d (%d rows)",
        len(inputs),
        rows_in,
        len(outputs),
        rows_out,
        extra={
            "fields": {
                "event": "compaction",
                "files_in": len(inputs),
                "files_out": len(outputs),
                "rows_in": rows_in,
                "rows_out": rows_out,
            }
        },
    )


def _purge(store: Store, grace_s: float, report: Report) -> None:
    """Delete retired files older than the grace period, then forget them."""
    cutoff = time.time() - grace_s
    expired = [name for name, at in store.manifest.read().retired if at <= cutoff]
    if expired:
        unlink_quietly([store.fragment_dir / name for name in expired])
        store.manifest.commit(forget=expired)
        report.purged += len(expired)


def compact_all(store: Store) -> Report | None:
    """Merge everything down to one file per metric and day (for tools and benchmarks)."""
    return compact(store, force=True, grace_s=0.0)
