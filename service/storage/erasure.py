"""Erasure: a user's readings removed from every file, driven by the manifest's tombstone.

``begin`` lists a tombstone (see ``tombstones``): from then on no reader sees the user's
earlier rows. ``finish`` makes it physical, under the compaction lock (one rewriter at a
time, and no merge reading a file it replaces): dead workers' WALs are replayed (publishing
drops erased rows), every listed file holding an erased row is rewritten without it (with
its rollup) in one manifest change, the replaced files are deleted at once (not after the
grace period: a query that listed one runs again, as after any retirement), and so are
the retired files still waiting for theirs. Live workers' WAL segments cannot be
rewritten: their owners flush when they see a new tombstone (see ``ingest.upkeep``), and
their flushes drop erased rows. Once no listed file, retired file, unlisted file or WAL
segment holds an erased row, the tombstone is marked ``done``; it stays ``KEEP_S`` more
(it keeps hiding rows of requests that were in flight when the erase began, and lets
``ops/maint verify`` check the files), then goes.

Every step can be cut short by ``kill -9``: the tombstone stays in the manifest until a
later ``finish`` (a compaction pass runs one while a tombstone is not done) completes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import polars as pl
from filelock import Timeout

from service.partials import rollup, spans_of
from service.schema import DAY_MS, IDENTITY, METRICS, ROW_SCHEMA
from service.storage import erased_rollups
from service.storage.compaction import compaction_lock
from service.storage.compaction_policy import TOP_LEVEL
from service.storage.files import unlink_quietly
from service.storage.fragments import FragmentInfo, is_companion, write_rollup, write_spans
from service.storage.manifest import Snapshot
from service.storage.orphans import sweep
from service.storage.quarantine import READ_ERRORS
from service.storage.recovery import replay_orphans
from service.storage.store import Store
from service.storage.tombstones import KEEP_S, Tombstone, erased, live, pending
from service.storage.wal import list_segments, read_segment, to_frame

ROUNDS = 4  # rewrite passes of one ``finish``: a flush may list a file during the last

Unflushed = Callable[[str], list[pl.DataFrame]]


@dataclass(slots=True)
class Progress:
    done: bool = False  # no file holds a row under any tombstone
    files_rewritten: int = 0
    rows_removed: int = 0  # rows dropped from files (duplicates of a reading included)


def begin(store: Store, user_id: str) -> Tombstone:
    """List a tombstone for ``user_id``: its rows acknowledged so far are erased for every
    reader at once. The cut-off is read from the clock under the manifest lock."""

    def add(current: Snapshot) -> tuple[Tombstone, ...]:
        now = time.time_ns()
        others = tuple(t for t in current.tombstones if t.user_id != user_id)
        return (*others, Tombstone(user_id, now, now / 1e9))

    snapshot = store.manifest.commit(tombstones=add)
    tomb = next(t for t in snapshot.tombstones if t.user_id == user_id)
    store.share_erasure(tomb)  # a shared table: every machine's (else ``finish`` shares it)
    return tomb


def readings_under(store: Store, unflushed: Unflushed, tomb: Tombstone) -> int:
    """How many readings (identities, every metric) ``tomb`` erases, wherever they are."""
    total = 0
    for metric in METRICS:
        frames = [df.lazy() for df in unflushed(metric)]  # before the manifest, as queries do
        files = _holding(store.manifest.read(), tomb.user_id, metric)
        if files:
            frames.append(_scan(store, files))
        table = store.table_rows(metric, 0, 2**62, tomb.user_id)
        if table is not None:
            frames.append(table.filter(pl.col("user_id") == tomb.user_id))
        if frames:
            hidden = pl.concat(frames).filter(
                (pl.col("user_id") == tomb.user_id) & (pl.col("seq") < tomb.before)
            )
            total += int(hidden.select(*IDENTITY).unique().select(pl.len()).collect().item())
    return total


def finish(store: Store, *, wait_s: float = 0.0, keep_s: float = KEEP_S) -> Progress | None:
    """Remove erased rows from every file it can; None when another process holds the
    compaction lock for longer than ``wait_s``."""
    if not pending(store.manifest.read().tombstones, keep_s):
        return Progress(done=True)
    lock = compaction_lock(store)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        return None
    try:
        return _finish(store, keep_s)
    finally:
        lock.release()


def _finish(store: Store, keep_s: float) -> Progress:
    replay_orphans(store)  # dead workers' rows: published without the erased ones
    progress = Progress()
    waiting = tuple(t for t in store.manifest.read().tombstones if t.done is None)
    progress.rows_removed, progress.files_rewritten = store.scrub_table(waiting)
    for _ in range(ROUNDS):
        snapshot = store.manifest.read()
        stones = tuple(t for t in snapshot.tombstones if t.done is None)
        clean = {f.name for f in snapshot.fragments}
        for f in snapshot.fragments:
            try:
                if _holds_erased(store, f, stones):
                    clean.discard(f.name)
                    clean.update(out.name for out in _rewrite(store, f, stones, progress))
            except READ_ERRORS:  # quarantined by the next query or merge that reads it
                clean.discard(f.name)
        rolled, rewritten = erased_rollups.scrub(store, stones)
        clean |= rolled
        progress.files_rewritten += rewritten
        _drop_retired(store)
        dirty = _wal_users(store, stones) | _unlisted_users(store, stones)
        settle = partial(_settle, stones, clean, dirty, time.time(), keep_s)
        after = store.manifest.commit(tombstones=settle)
        progress.done = all(t.done is not None for t in after.tombstones)
        if progress.done or dirty:
            break  # done, or waiting for other workers' flushes: no use going round now
    return progress


def _settle(
    checked: tuple[Tombstone, ...],
    clean: set[str],
    dirty: set[str],
    now: float,
    keep_s: float,
    current: Snapshot,
) -> tuple[Tombstone, ...]:
    """Under the manifest lock: a checked tombstone is done when no file listed now may hold
    an erased row; done ones older than ``keep_s`` go."""
    result = []
    for t in current.tombstones:
        if t in checked and t.user_id not in dirty:
            holders = [f.name for f in current.fragments if f.holds(t.user_id)]
            holders += erased_rollups.holders(current.rollups, t.user_id)
            if all(name in clean for name in holders):
                t = replace(t, done=now)
        if t.done is None or t.done + keep_s > now:
            result.append(t)
    return tuple(result)


def _holding(snapshot: Snapshot, user_id: str, metric: str | None = None) -> list[FragmentInfo]:
    return [
        f for f in snapshot.fragments if f.holds(user_id) and (metric is None or f.metric == metric)
    ]


def _scan(store: Store, files: Iterable[FragmentInfo]) -> pl.LazyFrame:
    return pl.scan_parquet([store.fragment_dir / f.name for f in files], schema=ROW_SCHEMA)


def _holds_erased(store: Store, f: FragmentInfo, stones: Iterable[Tombstone]) -> bool:
    mine = [t for t in stones if f.holds(t.user_id)]
    return _path_holds_erased(store.fragment_dir / f.name, mine)


def _path_holds_erased(path: Path, stones: list[Tombstone]) -> bool:
    condition = erased(stones)
    if condition is None:
        return False
    lf = pl.scan_parquet(path, schema=ROW_SCHEMA)
    return pl.collect_all([lf.filter(condition).head(1)])[0].height > 0


def _rewrite(
    store: Store, f: FragmentInfo, stones: tuple[Tombstone, ...], progress: Progress
) -> list[FragmentInfo]:
    """Replace ``f`` by a copy without erased rows, in one manifest change; the new entries.

    A level-2 file left empty is merged with a neighbour instead (the day's files must
    keep tiling the user ids)."""
    removed, rows = [f], live(_scan(store, [f]).collect(), stones)
    progress.rows_removed += f.rows - rows.height
    lo, hi = f.user_lo, f.user_hi
    while rows.height == 0 and f.level == TOP_LEVEL and (lo is not None or hi is not None):
        other = _neighbour(store.manifest.read(), f, lo, hi)
        removed.append(other)
        rows = live(_scan(store, [other]).collect(), stones)
        lo, hi = (other.user_lo, hi) if other.user_hi == lo else (lo, other.user_hi)
    outputs = []
    if rows.height:
        out = replace(store.write(rows, f.metric, f.level), user_lo=lo, user_hi=hi)
        if f.rollup:
            out = write_rollup(rollup(rows), store.fragment_dir, out)
        if f.spans:
            out = write_spans(spans_of(rows), store.fragment_dir, out)
        outputs.append(out)
    try:
        store.manifest.commit(add=outputs, remove=[r.name for r in removed], retire=True)
    except BaseException:
        unlink_quietly([store.fragment_dir / name for out in outputs for name in out.files])
        raise
    progress.files_rewritten += len(removed)
    return outputs


def _neighbour(snapshot: Snapshot, f: FragmentInfo, lo: str | None, hi: str | None) -> FragmentInfo:
    """The level-2 file of ``f``'s day and metric whose range ends at ``lo`` or starts at
    ``hi``."""
    same_day = f.min_ts // DAY_MS
    day = [
        g
        for g in snapshot.fragments
        if g.level == TOP_LEVEL and g.metric == f.metric and g.min_ts // DAY_MS == same_day
    ]
    before = [g for g in day if lo is not None and g.user_hi == lo]
    after = [g for g in day if hi is not None and g.user_lo == hi]
    return (before or after)[0]


def _drop_retired(store: Store) -> None:
    """Delete every retired file now rather than after its grace period (they may hold
    erased rows); queries that listed one run again."""
    names = [name for name, _ in store.manifest.read().retired]
    if names:
        unlink_quietly([store.fragment_dir / name for name in names])
        store.manifest.commit(forget=names)


def _wal_users(store: Store, stones: tuple[Tombstone, ...]) -> set[str]:
    """Users with an erased row in some WAL segment (a live worker's, not flushed yet)."""
    condition = erased(stones)
    if condition is None:
        return set()
    found: set[str] = set()
    for segments in list_segments(store.wal_dir).values():
        for path in segments:
            frames = read_segment(path)
            for metric in {frame.metric for frame in frames}:
                hit = to_frame(frames, metric).filter(condition)["user_id"].unique()
                found.update(hit.to_list())
    return found


def _unlisted_users(store: Store, stones: tuple[Tombstone, ...]) -> set[str]:
    """Users with an erased row in an unlisted file: old ones are deleted (``orphans``),
    young ones may be a flush about to be listed, so they only count as not clean yet."""
    sweep(store, 0.0)
    snapshot = store.manifest.read()
    named = {name for f in snapshot.fragments for name in f.files}
    named.update(name for name, _ in snapshot.retired)
    found: set[str] = set()
    for path in store.fragment_dir.glob("frag-*.parquet"):
        if path.name in named or is_companion(path.name):
            continue
        for t in stones:
            try:
                if _path_holds_erased(path, [t]):
                    found.add(t.user_id)
            except (OSError, pl.exceptions.PolarsError):
                found.add(t.user_id)  # unreadable: being written, or gone meanwhile
    return found


def leftovers(store: Store) -> list[str]:
    """Files holding a row an erase removed (for ``ops/maint verify``): Parquet files,
    listed or not, and WAL segments. Each tombstone is checked while the manifest keeps it."""
    stones = store.manifest.read().tombstones
    if not stones:
        return []
    problems = []
    for path in sorted(store.fragment_dir.glob("frag-*.parquet")):
        if is_companion(path.name):
            continue  # a rollup or spans file follows its file: ``verify`` compares counts
        try:
            hit = [t.user_id for t in stones if _path_holds_erased(path, [t])]
        except READ_ERRORS:
            continue  # reported as unreadable by ``verify``
        problems += [f"{path.name}: holds erased rows of user {user!r}" for user in hit]
    for user in sorted(_wal_users(store, stones)):
        problems.append(f"wal: holds erased rows of user {user!r} (its owner has not flushed)")
    return problems
