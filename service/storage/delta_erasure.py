"""Erasures and retention on the shared Delta table (see ``delta``), for every machine.

Shared tombstones: ``<table>/_erasures``, a Delta table of its own (``ERASURE_SCHEMA``: one
row ``user_id``, ``before``, ``at`` per erase, appended, never rewritten), so every machine
learns of an erase begun on any other (commits are put-if-absent, as the main table's).
``before`` is an ingest sequence of the erasing machine's clock; rows in the table carry
their own machine's, so machines must keep their clocks in step (NTP): a reading taken
within the clocks' difference of the erase may fall on either side of it.

Rows leave the table by Delta ``DELETE`` (files holding one are rewritten without it, in
one commit), and the standalone rollups of days past raw retention likewise
(``delta_rollups.erase``). The replaced files stay on the store, outside the table's
current version, until a vacuum older than them (``delta_compaction.vacuum``).
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from service.storage import delta_rollups
from service.storage.tombstones import Tombstone, erased

ERASURES = "_erasures"
ERASURE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "before": pl.Int64(),
    "at": pl.Float64(),
}
# how long after an erase every machine imports its tombstone and deletes its rows again
# from the table: a flush in flight across the erase is committed within seconds of it
RECENT_S = 24 * 3600.0


def erasures_uri(uri: str) -> str:
    return f"{uri.rstrip('/')}/{ERASURES}"


def record(uri: str, options: dict[str, str] | None, stones: Iterable[Tombstone]) -> None:
    """Append ``stones`` to the shared tombstones of the table at ``uri`` (created if
    missing; appends of several machines commit one after the other)."""
    frame = pl.DataFrame(
        [(t.user_id, t.before, t.at) for t in stones], schema=ERASURE_SCHEMA, orient="row"
    )
    if frame.height:
        write_deltalake(erasures_uri(uri), frame, mode="append", storage_options=options)


def shared(table: DeltaTable, options: dict[str, str] | None) -> tuple[Tombstone, ...]:
    """The shared tombstones of ``table`` (the ``_erasures`` handle): one per user, the
    latest cut-off."""
    uris = table.file_uris()
    if not uris:
        return ()
    frame = pl.scan_parquet(uris, schema=ERASURE_SCHEMA, storage_options=options).collect()
    latest = frame.group_by("user_id").agg(pl.col("before").max(), pl.col("at").max())
    return tuple(
        Tombstone(u, int(b), float(a), done=None) for u, b, a in latest.sort("user_id").iter_rows()
    )


def open_shared(uri: str, options: dict[str, str] | None) -> DeltaTable | None:
    """The ``_erasures`` table of ``uri``, None when no erase ever happened."""
    try:
        return DeltaTable(erasures_uri(uri), storage_options=options)
    except TableNotFoundError:
        return None


def missing(local: Iterable[Tombstone], known: Iterable[Tombstone]) -> list[Tombstone]:
    """Tombstones of ``local`` that ``known`` does not cover (same user, a cut-off as late)."""
    cut = {t.user_id: t.before for t in known}
    return [t for t in local if cut.get(t.user_id, 0) < t.before]


def merged(*groups: Iterable[Tombstone]) -> tuple[Tombstone, ...]:
    """One tombstone per user of ``groups``: the latest cut-off (``erased`` needs that)."""
    latest: dict[str, Tombstone] = {}
    for t in (t for group in groups for t in group):
        if t.user_id not in latest or latest[t.user_id].before < t.before:
            latest[t.user_id] = t
    return tuple(latest.values())


def recent(stones: Iterable[Tombstone], since_s: float) -> list[Tombstone]:
    """The tombstones of erases begun at ``since_s`` (epoch s) or later."""
    return [t for t in stones if t.at >= since_s]


def delete_rows(table: DeltaTable, stones: Iterable[Tombstone]) -> tuple[int, int]:
    """Delete the rows under ``stones`` from the main ``table`` in one commit; (rows deleted,
    files rewritten). No commit when no file can hold one."""
    predicate = " OR ".join(
        f"(user_id = '{_quoted(t.user_id)}' AND seq < {int(t.before)})" for t in stones
    )
    if not predicate:
        return 0, 0
    result = table.delete(predicate)
    return int(result.get("num_deleted_rows", 0)), int(result.get("num_removed_files", 0))


def leftovers(uri: str, options: dict[str, str] | None) -> list[str]:
    """Rows of an erased user still in the table's current version or in its standalone
    rollups (``ops/maint verify``)."""
    handle = open_shared(uri, options)
    stones = shared(handle, options) if handle is not None else ()
    condition = erased(stones)
    if condition is None:
        return []
    hits = (
        pl.scan_delta(uri, storage_options=options)
        .filter(condition)
        .group_by("user_id")
        .len()
        .sort("user_id")
        .collect()
    )
    rolled = delta_rollups.erased_rows(uri, options, [t.user_id for t in stones])
    return [
        *(f"table {uri}: {n} rows of erased user {user!r}" for user, n in hits.iter_rows()),
        *(f"rollups of {uri}: {n} rows of erased user {u!r}" for u, n in rolled.iter_rows()),
    ]


def _quoted(text: str) -> str:
    return text.replace("'", "''")
