"""What a query asks for and what it reads: the ``Query``, its ``Sources``, and the rows
of a query from any of them (``ROW_SCHEMA`` lazy frames)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from service.query.aggregate import select
from service.schema import ROW_SCHEMA
from service.storage.fragments import FragmentInfo
from service.storage.store import Store, TableDay


@dataclass(frozen=True, slots=True)
class Query:
    metric: str
    user_id: str
    start_ms: int
    end_ms: int
    device_id: str | None = None
    slot: str = "1m"  # the priority slot: "1s" or "1m"
    extremes: bool = False  # partials carry min and max too
    erased_before: int = 0  # the user's rows with a lower seq are erased (see ``tombstones``)


@dataclass(slots=True)
class Sources:
    """What a query reads: compacted day files (one per day, unique per identity), every
    other listed file (``loose``, with ``scanned`` rows), the unflushed rows, and the rows of
    a shared table if the store has one (raw rows, as unflushed ones)."""

    unflushed: list[pl.DataFrame]
    settled: list[FragmentInfo] = field(default_factory=list)
    loose: list[FragmentInfo] = field(default_factory=list)
    scanned: int = 0
    shared: pl.LazyFrame | None = None  # a shared table's rows outside its rolled-up days
    shared_days: list[TableDay] = field(default_factory=list)  # its days with a rollup


def scan(directory: Path, files: list[FragmentInfo]) -> pl.LazyFrame:
    """Every row of the fragment ``files`` in ``directory``."""
    return pl.scan_parquet([directory / f.name for f in files], schema=ROW_SCHEMA)


def query_rows(q: Query, lf: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of ``lf`` that ``q`` reads: its user (and device) and range, none erased."""
    picked = select(lf, q.user_id, q.start_ms, q.end_ms, q.device_id)
    return picked.filter(pl.col("seq") >= q.erased_before) if q.erased_before else picked


def settled_rows(
    store: Store, q: Query, files: list[FragmentInfo], days: list[TableDay]
) -> pl.LazyFrame | None:
    """``q``'s rows of compacted day files: listed ``files`` and a shared table's
    rolled-up ``days`` (a store has one kind or the other)."""
    scans = [scan(store.fragment_dir, files)] if files else []
    uris = [uri for day in days for uri in day.files]
    if uris:
        scans.append(store.scan_table(uris))
    return query_rows(q, pl.concat(scans)) if scans else None
