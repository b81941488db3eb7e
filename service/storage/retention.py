"""Retention: whole UTC days older than the kept ones leave the store, raw rows first.

With ``retention_days`` N (``HR_RETENTION_DAYS``), the current UTC day and the N before it
keep their raw readings; an older day keeps only its per-minute rollups (see
``fragments``), listed in the manifest's ``rollups`` (see ``manifest``), until
``rollup_retention_days`` M (``HR_ROLLUP_RETENTION_DAYS``, M >= N) drops them too. 0 keeps
forever.

Runs inside a compaction pass, under its lock. An expiring day is first merged to its
level-2 files (the pass forces the merges: a day's unmerged files have no rollup yet), then
one manifest change moves the level-2 entries to ``rollups`` and retires their raw files
(deleted after the grace period, like every retired file). A file of an expired day that is
not a level-2 file with a rollup at that point (readings that arrived after their day had
expired) is retired whole: a day past retention is never merged again, so its rollups are
final.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from service.schema import DAY_MS
from service.storage.compaction_policy import TOP_LEVEL
from service.storage.fragments import FragmentInfo
from service.storage.manifest import Snapshot
from service.storage.store import Store


@dataclass(frozen=True, slots=True)
class Retention:
    raw_days: int = 0  # 0: forever
    rollup_days: int = 0  # 0: forever

    def raw_cutoff(self, now_s: float | None = None) -> int | None:
        """The first kept instant of raw readings (epoch ms), None when all are kept."""
        return _cutoff(self.raw_days, now_s)

    def rollup_cutoff(self, now_s: float | None = None) -> int | None:
        return _cutoff(self.rollup_days, now_s)


def _cutoff(days: int, now_s: float | None) -> int | None:
    if not days:
        return None
    today = int((time.time() if now_s is None else now_s) * 1000) // DAY_MS
    return (today - days) * DAY_MS


def retained_until(rollups: Sequence[FragmentInfo]) -> int:
    """The end (epoch ms) of the last UTC day these rollup-only entries cover."""
    return max(f.max_ts // DAY_MS + 1 for f in rollups) * DAY_MS


def must_merge(files: Sequence[FragmentInfo], demoted: set[int], cutoff: int | None) -> bool:
    """Whether a pass must merge ``files`` (a metric's level-0 files, or one day's) now:
    some of their rows lie in an expired day that has not been rolled up yet."""
    if cutoff is None:
        return False
    return any(
        f.level < TOP_LEVEL and f.min_ts < cutoff and f.min_ts // DAY_MS not in demoted
        for f in files
    )


def demoted_days(snapshot: Snapshot, metric: str) -> set[int]:
    """The days of ``metric`` already rolled up without their raw files."""
    return {r.min_ts // DAY_MS for r in snapshot.rollups if r.metric == metric}


def plan(
    snapshot: Snapshot, retention: Retention, now_s: float | None = None
) -> tuple[list[str], list[str], list[str]]:
    """(demote, drop, drop_rollups) for ``Manifest.expire``: what ``retention`` removes now."""
    raw, rolled = retention.raw_cutoff(now_s), retention.rollup_cutoff(now_s)
    demote, drop = [], []
    for f in snapshot.fragments:
        if raw is None or f.max_ts >= raw:
            continue
        whole = rolled is not None and f.max_ts < rolled  # its rollup would expire too
        if f.level == TOP_LEVEL and f.rollup and not whole:
            demote.append(f.name)
        else:
            drop.append(f.name)
    drop_rollups = [r.name for r in snapshot.rollups if rolled is not None and r.max_ts < rolled]
    return demote, drop, drop_rollups


def has_work(snapshot: Snapshot, retention: Retention) -> bool:
    """Whether ``apply`` would change anything now."""
    return any(plan(snapshot, retention))


def apply(store: Store, retention: Retention) -> tuple[int, int]:
    """Expire what ``retention`` removes, in one manifest change; (raw files, rollups)
    retired."""
    demote, drop, drop_rollups = plan(store.manifest.read(), retention)
    if not (demote or drop or drop_rollups):
        return 0, 0
    store.manifest.expire(demote, drop, drop_rollups)
    return len(demote) + len(drop), len(drop_rollups)
