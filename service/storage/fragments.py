"""Fragments: immutable Parquet files, one writer each.

Name: ``fragments/frag-<worker>-<seq:012d>.parquet``; ``seq`` strictly increases per
worker and worker ids are never reused, so no two writers ever pick the same name.
Columns: ``ROW_SCHEMA`` (user_id, device_id, ts datetime[ms, UTC], value f64, seq i64);
level 0 (a flush) in arrival order, higher levels (compaction output) sorted by
(user_id, ts). A fragment is written under a temporary name, fsynced and
renamed into place; it is visible to queries only once the manifest lists it.

A fully compacted day is a set of level-2 files with disjoint user ranges that together
cover every user id: ``user_lo`` (inclusive) to ``user_hi`` (exclusive), ``None`` for no
bound; lower levels, and day files written before ranges existed, have no bounds.

A fully compacted day file may carry a companion rollup, ``<name>.rollup.parquet``
(``ROLLUP_SCHEMA``: per user, device and UTC minute the sum, count, min and max of its
de-duplicated readings, sorted by (user_id, minute)); its manifest entry says so.
A level-1 file may carry a companion spans file, ``<name>.spans.parquet`` (``SPANS_SCHEMA``
of ``partials``: its rows' spanned partials, what a query would otherwise compute from the
whole file); its entry says so too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from service.storage.files import create_private, link_new

ROW_GROUP = 100_000
ROLLUP_ROW_GROUP = 16_384


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    name: str
    metric: str
    rows: int
    min_ts: int  # epoch ms, inclusive
    max_ts: int  # epoch ms, inclusive
    level: int = 0  # 0: flushed; n: rewritten by n compactions
    rollup: bool = False  # a per-minute rollup file accompanies it
    user_lo: str | None = None  # the user ids it may hold: user_lo <= id < user_hi
    user_hi: str | None = None
    spans: bool = False  # a spans file accompanies it

    def holds(self, user_id: str) -> bool:
        """Whether rows of ``user_id`` may be in this file."""
        return (self.user_lo is None or self.user_lo <= user_id) and (
            self.user_hi is None or user_id < self.user_hi
        )

    def overlaps(self, lo: str | None, hi: str | None) -> bool:
        """Whether this file's user range meets ``[lo, hi)``."""
        return (hi is None or self.user_lo is None or self.user_lo < hi) and (
            lo is None or self.user_hi is None or lo < self.user_hi
        )

    @property
    def files(self) -> tuple[str, ...]:
        """The names of every file this entry owns."""
        rollup = (rollup_name(self.name),) if self.rollup else ()
        return (self.name, *rollup, *((spans_name(self.name),) if self.spans else ()))


def rollup_name(name: str) -> str:
    return name.removesuffix(".parquet") + ".rollup.parquet"


def spans_name(name: str) -> str:
    return name.removesuffix(".parquet") + ".spans.parquet"


def is_companion(name: str) -> bool:
    """Whether the file ``name`` accompanies a fragment (a rollup or spans file)."""
    return name.endswith((".rollup.parquet", ".spans.parquet"))


def fragment_name(worker: str, seq: int) -> str:
    return f"frag-{worker}-{seq:012d}.parquet"


def write_fragment(
    frame: pl.DataFrame, directory: Path, name: str, metric: str, level: int = 0
) -> FragmentInfo:
    """Write ``frame`` as the new fragment ``name``, durably, and describe it.

    Raises ``FileExistsError`` (and writes nothing) if ``name`` exists: a fragment is
    immutable, even against a caller that reuses a worker id.
    """
    _write_new(frame, directory, name, ROW_GROUP)
    low, high = frame.select(
        pl.col("ts").dt.epoch("ms").min().alias("low"), pl.col("ts").dt.epoch("ms").max()
    ).row(0)
    return FragmentInfo(name, metric, frame.height, int(low or 0), int(high or 0), level)


def write_rollup(frame: pl.DataFrame, directory: Path, of: FragmentInfo) -> FragmentInfo:
    """Write ``frame`` (``ROLLUP_SCHEMA``, sorted) as the rollup of ``of``; the new entry."""
    name = rollup_name(of.name)
    _write_new(frame, directory, name, ROLLUP_ROW_GROUP)
    return replace(of, rollup=True)


def write_spans(frame: pl.DataFrame, directory: Path, of: FragmentInfo) -> FragmentInfo:
    """Write ``frame`` (``SPANS_SCHEMA``, sorted by user) as the spans file of ``of``; the
    new entry."""
    _write_new(frame, directory, spans_name(of.name), ROLLUP_ROW_GROUP)
    return replace(of, spans=True)


def _write_new(frame: pl.DataFrame, directory: Path, name: str, row_group: int) -> None:
    tmp = directory / f".{name}.tmp"
    try:
        create_private(tmp).close()  # Polars truncates it and keeps its mode: never readable
        frame.write_parquet(tmp, statistics=True, row_group_size=row_group)
        link_new(tmp, directory / name)
    except BaseException:  # an error, or a stopping process: leave no temporary file
        tmp.unlink(missing_ok=True)
        raise
