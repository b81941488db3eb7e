"""Compaction and vacuum of the shared Delta table (see ``delta``), run from one machine.

A (metric, day) partition with at least ``min_files`` files, or without a rollup of its
current files, is rewritten as one sorted file: one row per reading identity (the highest
``seq``), ordered by (user_id, ts), so a one-user query reads few row groups. The rewrite
is a predicate overwrite of that partition from the snapshot it read: a machine appending
to the partition meanwhile makes the commit fail ("concurrent transactions added new
data") and nothing is lost; the partition is tried again on the next run. Two machines
compacting at once are equally safe, only wasteful: hence one machine (``ops/maint
compact-table`` from its cron).

Before compacting, a pass deletes again the rows under the shared tombstones of the last
``RECENT_S`` (a flush that read the tombstones just before an erase and committed just
after its ``DELETE``), from the table and from the standalone rollups; a rewritten
partition leaves out the rows under any shared tombstone. Each rewritten partition then
gets its per-minute rollup (``delta_rollups``). After compacting, retention
(``delta_retention``) drops the raw files of the days past ``HR_RETENTION_DAYS``, whose
rollups then answer alone, and the rollups past ``HR_ROLLUP_RETENTION_DAYS``; a day that
leaves whole, or whose rollup already stands alone, is not rewritten first.

Vacuum deletes files no version newer than ``retention_hours`` references; at least a
day, so that a query that listed its files before a compaction can still read them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

import polars as pl
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError

from service.schema import IDENTITY
from service.storage import delta_erasure, delta_retention, delta_rollups
from service.storage.delta import FILE_SCHEMA, PARTITIONS
from service.storage.delta_handle import Handle
from service.storage.tombstones import Tombstone, live

MIN_RETENTION_HOURS = 24
ROW_GROUP = 100_000  # as the local store's fragments: a one-user day spans one or two


@dataclass(slots=True)
class Report:
    rewritten: list[str] = field(default_factory=list)  # "metric/day: N files -> M rows"
    conflicted: list[str] = field(default_factory=list)  # appended to meanwhile: next run
    expired_files: int = 0  # raw files of days past raw retention
    expired_rollups: int = 0  # rollup files of days past rollup retention
    erased_rows: int = 0  # rows of erased users deleted again
    unrolled: list[str] = field(default_factory=list)  # rewritten, rollup not written
    kept: list[str] = field(default_factory=list)  # past raw retention, no rollup yet

    def __str__(self) -> str:
        lines = [f"retention dropped {self.expired_files} raw files"] if self.expired_files else []
        lines += (
            [f"rollup retention dropped {self.expired_rollups} files"]
            if self.expired_rollups
            else []
        )
        lines += [f"kept the raw files of {p}: no rollup yet, next run" for p in self.kept]
        lines += [f"erasure deleted {self.erased_rows} rows"] if self.erased_rows else []
        lines += [f"compacted {p}" for p in self.rewritten]
        lines += [f"skipped {p}: appended to meanwhile, next run" for p in self.conflicted]
        lines += [f"no rollup for {p}: its commit conflicted" for p in self.unrolled]
        return "\n".join(lines) or "nothing to compact"


def compact(
    uri: str,
    options: dict[str, str] | None,
    min_files: int,
    retention_days: int = 0,
    rollup_retention_days: int = 0,
    now_s: float | None = None,
) -> Report:
    """Delete recent erasures' rows again, rewrite every partition of the table at ``uri``
    holding ``min_files`` files or more (or no rollup), then apply retention."""
    kept = Handle(lambda: DeltaTable(uri, storage_options=options))
    table = kept.current()
    assert table is not None  # opening a missing table raises
    report = Report()
    stones = _erase_again(table, uri, options, report)
    policy = delta_retention.Policy(retention_days, rollup_retention_days, now_s)
    index = delta_rollups.index(delta_rollups.open_rollups(uri, options), options)
    alone = {key for key, files in index.items() if files == delta_rollups.STANDALONE}
    for metric, day, files in crowded(table, min_files, set(index.values())):
        if delta_retention.skips(policy, alone, metric, day):
            continue  # retention drops its raw files below: a rewrite would be lost work
        name = f"{metric}/{day.isoformat()}"
        table = kept.current() or table  # opened again every ``REBASE_COMMITS`` commits
        try:
            rows = compact_partition(table, options, metric, day, stones)
        except CommitFailedError:
            report.conflicted.append(name)
            table.update_incremental()
            continue
        report.rewritten.append(f"{name}: {files} files -> {rows} rows")
        try:
            roll(table, options, metric, day)
        except CommitFailedError:
            report.unrolled.append(name)  # the day is read raw until its next rewrite
    outcome = delta_retention.apply(table, options, policy)
    report.expired_files, report.expired_rollups = outcome.raw_files, outcome.rollup_files
    report.kept = outcome.kept
    return report


def _erase_again(
    table: DeltaTable, uri: str, options: dict[str, str] | None, report: Report
) -> tuple[Tombstone, ...]:
    """Delete recent erasures' rows (and rollup rows) again, counted in ``report``; every
    shared erasure, for the rewrites to honour."""
    handle = delta_erasure.open_shared(uri, options)
    stones = delta_erasure.shared(handle, options) if handle is not None else ()
    fresh = delta_erasure.recent(stones, time.time() - delta_erasure.RECENT_S)
    report.erased_rows = delta_erasure.delete_rows(table, fresh)[0]
    report.erased_rows += delta_rollups.erase(uri, options, [t.user_id for t in fresh])
    return stones


def crowded(
    table: DeltaTable, min_files: int, rolled: set[str] | None = None
) -> list[tuple[str, date, int]]:
    """(metric, day, files) of each partition with at least ``min_files`` files, or, when
    ``rolled`` (the file lists the rollups name) is given, with files no rollup names."""
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.is_empty():
        return []
    name = pl.col("path").str.split("/").list.last()
    counts = (
        actions.group_by("partition.metric", "partition.day")
        .agg(pl.len(), name.sort().str.join("\n").alias("files"))
        .filter(
            (pl.col("len") >= min_files)
            | (False if rolled is None else ~pl.col("files").is_in(sorted(rolled)))
        )
        .sort("partition.metric", "partition.day")
    )
    return [
        (str(m), _as_date(d), int(n)) for m, d, n in counts.select(pl.exclude("files")).iter_rows()
    ]


def compact_partition(
    table: DeltaTable,
    options: dict[str, str] | None,
    metric: str,
    day: date,
    stones: tuple[Tombstone, ...] = (),
) -> int:
    """Rewrite one partition from ``table``'s snapshot without the rows under ``stones``;
    the rows written."""
    where = [("metric", "=", metric), ("day", "=", day.isoformat())]
    files = table.file_uris(file_pruning_predicate=where)
    scan = pl.scan_parquet(
        files, schema=FILE_SCHEMA, hive_partitioning=False, storage_options=options
    )
    rows = (
        live(scan, stones)
        .sort("seq")
        .unique(subset=list(IDENTITY), keep="last")
        .sort("user_id", "ts")
        .with_columns(metric=pl.lit(metric), day=pl.lit(day))
        .collect()
    )
    write_deltalake(
        table,
        rows,
        mode="overwrite",
        predicate=f"metric = '{_quoted(metric)}' AND day = '{day.isoformat()}'",
        partition_by=PARTITIONS,
        writer_properties=WriterProperties(max_row_group_size=ROW_GROUP, compression="ZSTD"),
    )
    return rows.height


def roll(table: DeltaTable, options: dict[str, str] | None, metric: str, day: date) -> None:
    """Write the rollup of the partition ``compact_partition`` just rewrote through
    ``table`` (the handle is at that commit: the partition's files are the new ones)."""
    where = [("metric", "=", metric), ("day", "=", day.isoformat())]
    files = table.file_uris(file_pruning_predicate=where)
    rows = pl.scan_parquet(
        files, schema=FILE_SCHEMA, hive_partitioning=False, storage_options=options
    ).collect()
    delta_rollups.write(table.table_uri, options, metric, day, rows, files)


def vacuum(uri: str, options: dict[str, str] | None, retention_hours: int) -> list[str]:
    """Delete the files of the table and of its rollup table unreferenced for
    ``retention_hours`` (at least a day); their names."""
    if retention_hours < MIN_RETENTION_HOURS:
        raise ValueError(
            f"a vacuum retention of {retention_hours} h is below {MIN_RETENTION_HOURS} h: "
            "queries still reading an older version would fail"
        )
    tables = [DeltaTable(uri, storage_options=options)]
    rollups = delta_rollups.open_rollups(uri, options)
    tables += [rollups] if rollups is not None else []
    # the table's own minimum (7 days unless configured) gives way to ours
    return [
        name
        for table in tables
        for name in table.vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
        )
    ]


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
