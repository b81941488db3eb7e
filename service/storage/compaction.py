"""Compaction: merge many small fragments into few sorted per-day files.

Levels: 0 is a flushed fragment (any days, a few thousand rows); 1 is one UTC day of one
metric merged from level-0 fragments; 2 is a whole day merged from its level-1 and
level-2 files, de-duplicated by reading identity (the highest ``seq`` wins) and sorted by
(user_id, ts) so that row-group statistics prune a one-user query to a few row groups.
A level is merged once it holds ``min_files`` files (for a day), so each day settles at
one level-2 file plus fewer than ``min_files`` files of each lower level.

One compactor runs at a time across all processes (a non-blocking file lock elects it).
Each merge is one manifest change that lists the outputs and retires the inputs; retired
files are deleted after ``grace_s`` so that queries already running keep their files.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import polars as pl
from filelock import FileLock, Timeout

from service.catalog import IDENTITY, ROW_SCHEMA
from service.storage.files import unlink_quietly
from service.storage.fragments import FragmentInfo
from service.storage.store import Store

log = logging.getLogger("service.storage")

DAY_MS = 86_400_000
TOP_LEVEL = 2


@dataclass(slots=True)
class Report:
    files_in: int = 0
    files_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    purged: int = 0


def compact(
    store: Store, *, min_files: int = 8, grace_s: float = 120.0, force: bool = False
) -> Report | None:
    """Run one compaction pass; None when another process is compacting.

    With ``force`` every day is merged down to a single level-2 file.
    """
    lock = FileLock(store.root / "compaction.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    try:
        report = Report()
        _purge(store, grace_s, report)
        level0 = [f for f in store.manifest.read().fragments if f.level == 0]
        by_metric: dict[str, list[FragmentInfo]] = defaultdict(list)
        for f in level0:
            by_metric[f.metric].append(f)
        for metric, group in by_metric.items():
            if force or len(group) >= min_files:
                _merge_level0(store, metric, group, report)
        for (metric, _day), group in _days(store).items():
            lower = [f for f in group if f.level < TOP_LEVEL]
            if (force and (len(group) > 1 or lower)) or len(lower) >= min_files:
                _merge_day(store, metric, group, report)
        return report
    finally:
        lock.release()


def _days(store: Store) -> dict[tuple[str, int], list[FragmentInfo]]:
    days: dict[tuple[str, int], list[FragmentInfo]] = defaultdict(list)
    for f in store.manifest.read().fragments:
        if f.level > 0:
            days[(f.metric, f.min_ts // DAY_MS)].append(f)
    return days


def _scan(store: Store, files: list[FragmentInfo]) -> pl.LazyFrame:
    return pl.scan_parquet([store.fragment_dir / f.name for f in files], schema=ROW_SCHEMA)


def _dedupe_sorted(lf: pl.LazyFrame) -> pl.LazyFrame:
    latest = lf.group_by(*IDENTITY).agg(pl.col("value").sort_by("seq").last(), pl.col("seq").max())
    return latest.select(*ROW_SCHEMA).sort("user_id", "ts")


def _merge_level0(store: Store, metric: str, files: list[FragmentInfo], report: Report) -> None:
    rows = _scan(store, files).collect()
    day = (pl.col("ts").dt.epoch("ms") // DAY_MS).alias("day")
    outputs = [
        store.write(_dedupe_sorted(part.drop("day").lazy()).collect(), metric, 1)
        for part in rows.with_columns(day).partition_by("day")
    ]
    _swap(store, files, outputs, report)


def _merge_day(store: Store, metric: str, files: list[FragmentInfo], report: Report) -> None:
    output = store.write(_dedupe_sorted(_scan(store, files)), metric, TOP_LEVEL)
    _swap(store, files, [output], report)


def _swap(
    store: Store, inputs: list[FragmentInfo], outputs: list[FragmentInfo], report: Report
) -> None:
    try:
        store.manifest.commit(add=outputs, remove=[f.name for f in inputs], retire=True)
    except BaseException:
        unlink_quietly([store.fragment_dir / f.name for f in outputs])
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
