"""The per-minute rollup table beside the shared Delta table (see ``delta``).

``<table>/_rollups``, a Delta table of its own: ``ROLLUP_SCHEMA`` columns plus ``files`` (the
names, newline-separated, of the compacted files the row summarises), partitioned by
``metric`` and ``day`` like the main table, each day sorted by (user_id, minute). The table
compaction writes one rollup per day it rewrites, right after the day's commit, with a
predicate overwrite of that day. A query trusts a day's rollup only while the day's files
in the main table still include every file it names (the names are unique): a rollup
left stale by a later erase, or by a compaction that stopped between its two commits, is
ignored and the day is read raw.

A rollup whose ``files`` is ``STANDALONE`` (empty) names no file: its day's raw readings
are past retention (``delta_retention``) and the rollup alone answers for the day, until
rollup retention drops it. An erase deletes its user's rows from such rollups (they carry
no ``seq``, and no reading sent after an erase reaches a day that old).
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import date

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from service.partials import partials
from service.schema import DAY_MS, ROLLUP_SCHEMA
from service.storage.delta_handle import Handle
from service.storage.store import TableDay

ROLLUPS = "_rollups"
# Delta timestamps are microseconds
FILE_SCHEMA: dict[str, pl.DataType] = {
    **ROLLUP_SCHEMA,
    "minute": pl.Datetime("us", "UTC"),
    "files": pl.String(),
}
PARTITIONS = ["metric", "day"]
STANDALONE = ""  # the ``files`` of a rollup whose day's raw readings are past retention
CACHED_ENTRIES = 4096  # (rollup file, user) pairs a worker keeps: a user-day is ~100 KB
REFRESH_S = 1.0  # a query's split into rolled-up and raw days may use rollups this old


def rollups_uri(uri: str) -> str:
    return f"{uri.rstrip('/')}/{ROLLUPS}"


def write(
    uri: str,
    options: dict[str, str] | None,
    metric: str,
    day: date,
    rows: pl.DataFrame,
    files: list[str],
) -> None:
    """Replace the rollup of ``metric``'s ``day`` by that of ``rows`` (the day's compacted
    rows, unique per identity), naming ``files``, the day's files that hold them."""
    names = "\n".join(sorted(posixpath.basename(f) for f in files))
    frame = (
        partials(rows.lazy(), ("user_id", "device_id"), extremes=True)
        .select(pl.col(name).cast(FILE_SCHEMA[name]) for name in ROLLUP_SCHEMA)
        .sort("user_id", "minute", "device_id")
        .with_columns(files=pl.lit(names), metric=pl.lit(metric), day=pl.lit(day))
        .collect()
    )
    target = rollups_uri(uri)
    if DeltaTable.is_deltatable(target, storage_options=options):
        write_deltalake(
            target,
            frame,
            mode="overwrite",
            predicate=f"metric = '{_quoted(metric)}' AND day = '{day.isoformat()}'",
            partition_by=PARTITIONS,
            storage_options=options,
        )
    else:  # the first rollup; a second compactor racing it fails its commit (next run)
        write_deltalake(
            target, frame, mode="append", partition_by=PARTITIONS, storage_options=options
        )


def open_rollups(uri: str, options: dict[str, str] | None) -> DeltaTable | None:
    try:
        return DeltaTable(rollups_uri(uri), storage_options=options)
    except TableNotFoundError:
        return None


def rolled(uri: str, options: dict[str, str] | None) -> set[str]:
    """Every file list (``files``) the rollups of the table at ``uri`` name."""
    return set(index(open_rollups(uri, options), options).values())


def index(handle: DeltaTable | None, options: dict[str, str] | None) -> dict[tuple[str, date], str]:
    """(metric, day) -> the file list its rollup names (``STANDALONE``: none), for every
    rollup of ``handle`` (the rollup table; None: no rollup yet)."""
    uris = [] if handle is None else handle.file_uris()
    if handle is None or not uris:
        return {}
    scan = pl.scan_parquet(
        uris,
        schema=FILE_SCHEMA,
        hive_partitioning=False,
        storage_options=options,
        include_file_paths="source",
    )
    read = scan.select("source", "files").unique().collect()
    name = pl.col("path").str.split("/").list.last()
    partitions = pl.DataFrame(handle.get_add_actions(flatten=True)).select(
        name.alias("name"), pl.col("partition.metric"), pl.col("partition.day")
    )
    found = read.with_columns(pl.col("source").str.split("/").list.last().alias("name")).join(
        partitions, on="name"
    )
    return {
        (str(metric), day): str(files)
        for metric, day, files in found.select(
            "partition.metric", "partition.day", "files"
        ).iter_rows()
    }


def erase(uri: str, options: dict[str, str] | None, users: Iterable[str]) -> int:
    """Delete the rows of ``users`` from the standalone rollups of the table at ``uri``;
    the rows deleted."""
    listed = ", ".join(f"'{_quoted(user)}'" for user in sorted(set(users)))
    handle = open_rollups(uri, options) if listed else None
    if handle is None:
        return 0
    result = handle.delete(f"files = '{STANDALONE}' AND user_id IN ({listed})")
    return int(result.get("num_deleted_rows", 0))


def erased_rows(uri: str, options: dict[str, str] | None, users: Iterable[str]) -> pl.DataFrame:
    """(user_id, len): the rows of ``users`` left in the standalone rollups of ``uri``."""
    handle = open_rollups(uri, options)
    uris = [] if handle is None else handle.file_uris()
    if not uris:
        return pl.DataFrame(schema={"user_id": pl.String, "len": pl.UInt32})
    scan = pl.scan_parquet(
        uris, schema=FILE_SCHEMA, hive_partitioning=False, storage_options=options
    )
    wanted = (pl.col("files") == STANDALONE) & pl.col("user_id").is_in(sorted(set(users)))
    return scan.filter(wanted).group_by("user_id").len().sort("user_id").collect()


class UserRollups:
    """One user's rows of rollup files, kept by (file, user): rollup files never change
    (a new rollup is a new file), so a repeated query reads none again (on S3, a GET each)."""

    def __init__(self, entries: int = CACHED_ENTRIES) -> None:
        self._entries = entries
        self._frames: OrderedDict[tuple[str, str], pl.DataFrame] = OrderedDict()
        self._lock = threading.Lock()

    def rows(self, uris: list[str], user_id: str, options: dict[str, str] | None) -> pl.DataFrame:
        """``user_id``'s rows of the rollup files ``uris`` (``FILE_SCHEMA``, minute in ms)."""
        with self._lock:
            found = {u: self._frames.get((u, user_id)) for u in uris}
            for u in uris:
                if found[u] is not None:
                    self._frames.move_to_end((u, user_id))
        missing = [u for u, frame in found.items() if frame is None]
        if missing:
            read = (
                pl.scan_parquet(
                    missing,
                    schema=FILE_SCHEMA,
                    hive_partitioning=False,
                    storage_options=options,
                    include_file_paths="source",
                )
                .filter(pl.col("user_id") == user_id)
                .with_columns(pl.col("minute").cast(ROLLUP_SCHEMA["minute"]))
                .collect()
            )
            parts = read.partition_by("source", as_dict=True, include_key=False)
            empty = read.clear().drop("source")
            with self._lock:
                for u in missing:
                    frame = parts.get((u,), empty)
                    found[u] = self._frames[(u, user_id)] = frame
                while len(self._frames) > self._entries:
                    self._frames.popitem(last=False)
        return pl.concat([f for f in found.values() if f is not None])


class Rollups:
    """The rollup table as one worker's queries read it: a handle (refreshed when older
    than the caller allows) and the users' rows of its files (``UserRollups``)."""

    def __init__(self, uri: str, options: dict[str, str] | None) -> None:
        self._uri = uri
        self._options = options
        self._handle = Handle(lambda: open_rollups(uri, options))  # once a compaction wrote it
        self._refreshed = float("-inf")  # monotonic s
        self._lock = threading.Lock()
        self._rows = UserRollups()

    def days(
        self, predicate: list[tuple[str, str, str]], user_id: str, files: list[str]
    ) -> list[TableDay]:
        """``rolled_days`` at a version at most ``REFRESH_S`` old: a query's ``retained``
        has just read it (an older rollup only means days read raw)."""
        with self._lock:
            handle = self._table(REFRESH_S)
            if handle is None:
                return []
            return rolled_days(handle, self._rows, self._options, predicate, user_id, files)

    def retained(
        self, predicate: list[tuple[str, str, str]], user_id: str
    ) -> tuple[int, pl.DataFrame] | None:
        """``retained`` at the latest version."""
        with self._lock:
            handle = self._table(0.0)
            if handle is None:
                return None
            return retained(handle, self._rows, self._options, predicate, user_id)

    def _table(self, max_age_s: float) -> DeltaTable | None:
        if time.monotonic() - self._refreshed < max_age_s:
            return self._handle.current()
        self._refreshed = time.monotonic()
        return self._handle.latest()


def rolled_days(
    handle: DeltaTable,
    cache: UserRollups,
    options: dict[str, str] | None,
    predicate: list[tuple[str, str, str]],
    user_id: str,
    files: list[str],
) -> list[TableDay]:
    """The days of ``predicate`` whose rollup still holds (every file it names is among
    ``files``, the main table's files of those days), with ``user_id``'s rollup rows."""
    uris = handle.file_uris(file_pruning_predicate=predicate)
    if not uris:
        return []
    rows = cache.rows(uris, user_id, options).filter(pl.col("files") != STANDALONE)
    by_name = {posixpath.basename(f): f for f in files}
    days = []
    for (names,), part in rows.partition_by("files", as_dict=True).items():
        wanted = str(names).split("\n")
        if all(name in by_name for name in wanted):
            days.append(TableDay([by_name[n] for n in wanted], part.drop("files")))
    return days


def retained(
    handle: DeltaTable,
    cache: UserRollups,
    options: dict[str, str] | None,
    predicate: list[tuple[str, str, str]],
    user_id: str,
) -> tuple[int, pl.DataFrame] | None:
    """``user_id``'s rows (``ROLLUP_SCHEMA``) of the standalone rollups of ``predicate``'s
    days, and the end (epoch ms) of the last of those days; None when there are none."""
    uris = handle.file_uris(file_pruning_predicate=predicate)
    if not uris:
        return None
    rows = cache.rows(uris, user_id, options).filter(pl.col("files") == STANDALONE)
    if rows.is_empty():
        return None
    last = int(rows["minute"].dt.epoch("ms").max())  # type: ignore[arg-type]
    return (last // DAY_MS + 1) * DAY_MS, rows.drop("files")


def _quoted(text: str) -> str:
    return text.replace("'", "''")
