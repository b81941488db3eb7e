"""Pure LazyFrame -> frame steps of the query, up to the priority picks (no files, no HTTP).

Input rows follow ``ROW_SCHEMA``. Output: per priority slot (a UTC minute, or second) the
partials of the readings that survive device priority: ``slot`` (datetime[ms, UTC]),
``device_id``, ``sum``, ``count`` [, ``min``, ``max``]. ``query.buckets`` turns them into
the buckets of a series.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from service.config import PriorityScope
from service.partials import partials
from service.schema import IDENTITY

if TYPE_CHECKING:
    from polars._typing import EngineType


# for plans over small frames already in memory (partials, unflushed rows, one user's rows):
# the in-memory engine's fixed cost per collect is about half the default's (122 against
# 261 µs for a 10-row plan, polars 2.1); scans of files keep the default
SMALL: EngineType = "in-memory"
# and for such plans the optimizer's passes cost more than they save (a 40-node plan over a
# few thousand rows: 5.2 ms collected as is, 3.4 ms unoptimised); types are still checked
PLAIN = pl.QueryOptFlags.none()


def select(
    lf: pl.LazyFrame, user_id: str, start_ms: int, end_ms: int, device_id: str | None = None
) -> pl.LazyFrame:
    """Rows of one user (and device) with ``start <= ts < end``."""
    ts = pl.col("ts").dt.epoch("ms")
    cond = (pl.col("user_id") == user_id) & (ts >= start_ms) & (ts < end_ms)
    if device_id is not None:
        cond = cond & (pl.col("device_id") == device_id)
    return lf.filter(cond)


def dedupe(lf: pl.LazyFrame) -> pl.LazyFrame:
    """One row per reading identity: the one written last (highest ``seq``)."""
    return lf.sort("seq").unique(subset=list(IDENTITY), keep="last")


def combine(settled: pl.LazyFrame | None, fresh: pl.LazyFrame | None) -> pl.LazyFrame:
    """One row per reading identity from two sets of rows.

    ``settled`` rows are already unique per identity (compacted files, one per day), so
    only those that share an identity with a ``fresh`` row join the (small) de-duplication;
    the bulk passes through untouched.
    """
    if settled is None:
        assert fresh is not None
        return dedupe(fresh)
    if fresh is None:
        return settled
    keys = fresh.select(*IDENTITY).unique()
    clash = settled.join(keys, on=list(IDENTITY), how="semi")
    clean = settled.join(keys, on=list(IDENTITY), how="anti")
    return pl.concat([clean, dedupe(pl.concat([clash, fresh]))])


def unlisted(priority: Mapping[str, int]) -> int:
    """The rank of a device the priority list does not name: below every listed one."""
    return max(priority.values(), default=0) + 1


def rank(priority: Mapping[str, int]) -> pl.Expr:
    """Device rank, lower wins; unlisted devices rank below every listed one."""
    return (
        pl.col("device_id")
        .replace_strict(dict(priority), default=unlisted(priority), return_dtype=pl.Int64)
        .alias("rank")
    )


def distinct(devices: pl.Series) -> list[str]:
    """The distinct ids of ``devices``; one device (the usual case) is checked cheaply."""
    if devices.len() and (devices == devices[0]).all():
        return [devices[0]]
    return devices.unique().to_list()


def preference(priority: Mapping[str, int] | None, devices: list[str]) -> list[str]:
    """``devices`` best first: by rank, then by id."""
    if priority is None:
        return sorted(devices)
    worst = unlisted(priority)
    return sorted(devices, key=lambda d: (priority.get(d, worst), d))


def slot_partials(rows: pl.LazyFrame, every: str, extremes: bool) -> pl.LazyFrame:
    """De-duplicated rows -> per (``slot``, device) partials."""
    return partials(rows, extremes=extremes, every=every, name="slot")


def survivors(rows: pl.LazyFrame, priority: Mapping[str, int]) -> pl.LazyFrame:
    """Timestamp scope: per exact timestamp, only the best device's reading survives."""
    # between two unlisted devices (one rank) the first id wins
    ranked = rows.with_columns(rank(priority)).sort("ts", "rank", "device_id")
    return ranked.unique("ts", keep="first", maintain_order=True).drop("rank")


def pick(
    parts: pl.LazyFrame, priority: Mapping[str, int] | None, engine: EngineType = "auto"
) -> pl.DataFrame:
    """Per (slot, device) partials, each pair once -> the best device's partials per slot.

    Without ``priority`` (one device's rows, or timestamp-scope survivors) every row stays.
    """
    # ``parts`` runs on ``engine``; what follows is a few thousand rows, where the
    # in-memory engine has far less fixed cost than the streaming one
    per_device = parts.collect(engine=engine)
    if priority is None or per_device.height == 0:
        return per_device
    devices = preference(priority, distinct(per_device["device_id"]))
    if len(devices) == 1:  # one row per slot already
        return per_device
    # sorted by one integer (slot, then device order), the first row of each slot is its
    # best device's: several times cheaper than a two-key sort and a distinct pass
    slot = pl.col("slot")
    key = slot.dt.epoch("ms") * (len(devices) + 1) + device_order(devices)
    return per_device.sort(key).filter(slot.ne_missing(slot.shift(1)))


def device_order(devices: list[str]) -> pl.Expr:
    """Each row's device's position in ``devices``."""
    device = pl.col("device_id")
    if len(devices) == 1:
        return pl.lit(0, pl.Int64)
    if len(devices) > 16:
        order = {d: i for i, d in enumerate(devices)}
        return device.replace_strict(order, default=len(devices), return_dtype=pl.Int64)
    expr: Any = pl
    for i, d in enumerate(devices):  # a short when-chain is cheaper than a mapping
        expr = expr.when(device == d).then(pl.lit(i, pl.Int64))
    return expr.otherwise(pl.lit(len(devices), pl.Int64))  # type: ignore[no-any-return]


def priority_partials(
    rows: pl.LazyFrame,
    priority: Mapping[str, int] | None,
    scope: PriorityScope,
    every: str = "1m",
    extremes: bool = False,
    engine: EngineType = "auto",
) -> pl.DataFrame:
    """De-duplicated rows -> the surviving partials per slot of ``every``."""
    if priority is not None and scope == "timestamp":
        return pick(slot_partials(survivors(rows, priority), every, extremes), None, engine)
    return pick(slot_partials(rows, every, extremes), priority, engine)
