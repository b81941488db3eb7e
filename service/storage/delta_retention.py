"""Retention on the shared Delta table (see ``delta``): raw days leave, their rollups stay.

With ``raw_days`` N (``HR_RETENTION_DAYS``) the current UTC day and the N before it keep
their raw readings. An older day keeps only its per-minute rollup (``delta_rollups``) until
``rollup_days`` M (``HR_ROLLUP_RETENTION_DAYS``, M >= N) drops that too; 0 keeps forever.

A day's raw files leave only once its rollup stands alone: the compaction pass that runs
retention first rewrites and rolls up every expiring day whose rollup is not current
(``delta_compaction``), then one commit on the rollup table marks the current rollups of
the expiring days standalone (``files`` set to ``delta_rollups.STANDALONE``: they name no
file, queries answer those days from them alone), then one ``DELETE`` on the main table
drops the raw files of the standalone days. A day whose rollup could not be written (its
rewrite met a concurrent append) keeps its raw files until a later pass. Rows that reach a
standalone day later (readings sent after their day expired) are never rolled up: the
day's rollup is final, and the next pass drops them.

A crash between the two commits leaves standalone rollups beside raw files: queries
already answer from the rollups, and the next pass drops the raw files.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from service.storage import delta_rollups

# (metric, day): one partition of the main table or of the rollup table
Partition = tuple[str, date]


@dataclass(frozen=True, slots=True)
class Policy:
    raw_days: int = 0  # 0: forever
    rollup_days: int = 0  # 0: forever
    now_s: float | None = None  # the clock (tests); None: now

    def raw_cutoff(self) -> date | None:
        """The first UTC day whose raw readings are kept; None when all are."""
        return self._cutoff(self.raw_days)

    def rollup_cutoff(self) -> date | None:
        return self._cutoff(self.rollup_days)

    def _cutoff(self, days: int) -> date | None:
        if not days:
            return None
        now = time.time() if self.now_s is None else self.now_s
        return datetime.fromtimestamp(now, UTC).date() - timedelta(days=days)


@dataclass(slots=True)
class Outcome:
    raw_files: int = 0  # raw files of days past raw retention dropped
    rollup_files: int = 0  # rollup files of days past rollup retention dropped
    kept: list[str] = field(default_factory=list)  # "metric/day": no rollup yet, raw kept


def skips(policy: Policy, standalone: set[Partition], metric: str, day: date) -> bool:
    """Whether compaction leaves ``metric``'s ``day`` alone: its rollup stands alone
    already, or the day leaves whole (past rollup retention)."""
    cutoff = policy.rollup_cutoff()
    return (metric, day) in standalone or (cutoff is not None and day < cutoff)


def apply(table: DeltaTable, options: dict[str, str] | None, policy: Policy) -> Outcome:
    """Drop what ``policy`` removes now from the table ``table`` and its rollup table (the
    expiring days' rollups are current: the caller rewrote the others just before)."""
    outcome = Outcome()
    raw_cutoff, rollup_cutoff = policy.raw_cutoff(), policy.rollup_cutoff()
    if raw_cutoff is None:
        return outcome
    table.update_incremental()  # the partitions as the compaction before left them
    rollups = delta_rollups.open_rollups(table.table_uri, options)
    index = delta_rollups.index(rollups, options)
    drop: list[Partition] = []
    mark: list[Partition] = []
    for metric, day, names in _partitions(table).filter(pl.col("day") < raw_cutoff).iter_rows():
        key = (str(metric), _as_date(day))
        rolled = index.get(key)
        if rolled == delta_rollups.STANDALONE or (rollup_cutoff and key[1] < rollup_cutoff):
            drop.append(key)
        elif rolled == names:
            mark.append(key)
        else:
            outcome.kept.append(f"{key[0]}/{key[1].isoformat()}")
    if mark and rollups is not None:
        try:
            rollups.update(
                updates={"files": f"'{delta_rollups.STANDALONE}'"}, predicate=_where(mark)
            )
            drop += mark
        except CommitFailedError:  # an erase changed the rollups meanwhile: next pass
            outcome.kept += [f"{m}/{d.isoformat()}" for m, d in mark]
    if drop:
        try:
            outcome.raw_files = int(table.delete(_where(drop)).get("num_removed_files", 0))
        except CommitFailedError:  # late readings appended meanwhile: the next pass drops them
            outcome.kept += [f"{m}/{d.isoformat()}" for m, d in drop]
    if rollup_cutoff is not None and rollups is not None:
        rollups.update_incremental()
        result = rollups.delete(f"day < '{rollup_cutoff.isoformat()}'")
        outcome.rollup_files = int(result.get("num_removed_files", 0))
    return outcome


def _partitions(table: DeltaTable) -> pl.DataFrame:
    """(metric, day, files): each partition of ``table`` with its files' sorted names
    joined as a rollup's ``files`` names them."""
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.is_empty():
        return pl.DataFrame(schema={"metric": pl.String, "day": pl.Date, "files": pl.String})
    name = pl.col("path").str.split("/").list.last()
    return actions.group_by(
        pl.col("partition.metric").alias("metric"), pl.col("partition.day").alias("day")
    ).agg(name.sort().str.join("\n").alias("files"))


def _where(partitions: Iterable[Partition]) -> str:
    """A predicate matching ``partitions``: per metric, its days."""
    days: dict[str, list[str]] = {}
    for metric, day in sorted(partitions):
        days.setdefault(metric, []).append(f"'{day.isoformat()}'")
    return " OR ".join(
        f"(metric = '{_quoted(metric)}' AND day IN ({', '.join(listed)}))"
        for metric, listed in sorted(days.items())
    )


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
