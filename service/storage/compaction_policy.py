"""Compaction policy: which files are due for a merge, and when merging has fallen behind.

Levels: 0 is a flushed fragment (any days, a few thousand rows); 1 is one UTC day of one
metric merged from level-0 fragments; 2 is a whole day merged from its level-1 and
level-2 files, de-duplicated by reading identity and sorted by (user_id, ts).
Level-0 files are merged once ``min_files`` exist. A day's level-1 files are merged into
its level-2 files once there are ``min_files`` of them holding at least a quarter of the
rows the level-2 files hold, or ``TIER_FILES`` times ``min_files`` of them whatever they
hold: each merge rewrites the day so far, so waiting until the new rows are a fair share
of it keeps the rows written per row ingested bounded (about 5 for a growing day, instead
of one rewrite of the whole day per ``min_files`` level-1 files), while the file count
stays bounded too: each day settles at its level-2 files plus fewer than ``TIER_FILES``
times ``min_files`` level-1 files.

The tunables an operator sets (``min_files``, ``grace_s``) come from ``Settings``; the
tier constants below are not settings because the bounds above are argued from them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from service.config import Settings
from service.schema import DAY_MS
from service.storage.fragments import FragmentInfo
from service.storage.orphans import stale
from service.storage.store import Store
from service.storage.tombstones import pending

_DEFAULTS = Settings()  # callers with settings of their own pass those values

TOP_LEVEL = 2
TIER_RATIO = 4  # a day merge waits until its level-1 rows are a quarter of its level-2 rows
TIER_FILES = 4  # ... or until it has this many times ``min_files`` level-1 files
# a backlog of this many times ``min_files`` unmerged files means merging has fallen behind
BEHIND_FILES_PER_MIN_FILES = 32


def has_work(
    store: Store,
    *,
    min_files: int = _DEFAULTS.compact_min_files,
    grace_s: float = _DEFAULTS.compact_grace_s,
) -> bool:
    """Whether ``compact`` with these settings would merge or delete anything now: a
    cheap look at the manifest (and at the names in ``fragments/``, for orphans) that
    spares starting a compaction process for nothing."""
    manifest = store.manifest.read()
    cutoff = time.time() - grace_s
    if any(at <= cutoff for _, at in manifest.retired) or stale(store, grace_s):
        return True
    if pending(manifest.tombstones):  # an erasure to finish (see ``erasure``)
        return True
    level0: dict[str, int] = defaultdict(int)
    for f in manifest.fragments:
        if f.level == 0:
            level0[f.metric] += 1
    if any(level0_due(count, min_files, False) for count in level0.values()):
        return True
    return any(day_due(group, min_files, False) for group in by_day(manifest.fragments).values())


def backlog(store: Store) -> int:
    """Files not merged into a day's sorted files yet (levels 0 and 1)."""
    return sum(1 for f in store.manifest.read().fragments if f.level < TOP_LEVEL)


def is_behind(store: Store, *, min_files: int) -> bool:
    """Whether ingestion is outrunning the merges (the backlog keeps growing)."""
    return backlog(store) >= BEHIND_FILES_PER_MIN_FILES * min_files


def level0_due(files: int, min_files: int, force: bool) -> bool:
    """Whether a metric's ``files`` level-0 fragments are due for a merge."""
    return files > 0 and (force or files >= min_files)


def day_due(group: list[FragmentInfo], min_files: int, force: bool) -> bool:
    """Whether one day's files (levels 1 and 2) are due for a day merge."""
    lower = [f for f in group if f.level < TOP_LEVEL]
    if force or len(lower) < min_files:
        return force and bool(lower)
    top_rows = sum(f.rows for f in group if f.level == TOP_LEVEL)
    lower_rows = sum(f.rows for f in lower)
    return lower_rows * TIER_RATIO >= top_rows or len(lower) >= TIER_FILES * min_files


def by_day(fragments: Sequence[FragmentInfo]) -> dict[tuple[str, int], list[FragmentInfo]]:
    """Files above level 0 per (metric, UTC day)."""
    days: dict[tuple[str, int], list[FragmentInfo]] = defaultdict(list)
    for f in fragments:
        if f.level > 0:
            days[(f.metric, f.min_ts // DAY_MS)].append(f)
    return days
