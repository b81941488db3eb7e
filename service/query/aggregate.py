"""Pure LazyFrame -> LazyFrame steps of the per-minute query (no files, no HTTP).

Input rows follow ``ROW_SCHEMA``. Output: ``minute`` (datetime[ms, UTC]), ``device_id``,
``value``, sorted by minute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from service.config import PriorityScope
from service.partials import partials
from service.schema import IDENTITY, MINUTE_MS, Aggregation

if TYPE_CHECKING:
    from polars._typing import EngineType


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


def rank(priority: Mapping[str, int]) -> pl.Expr:
    """Device rank, lower wins; unlisted devices rank below every listed one."""
    unlisted = _unlisted(priority)
    return (
        pl.col("device_id")
        .replace_strict(dict(priority), default=unlisted, return_dtype=pl.Int64)
        .alias("rank")
    )


def _unlisted(priority: Mapping[str, int]) -> int:
    """The rank of a device the priority list does not name: below every listed one."""
    return max(priority.values(), default=0) + 1


def from_partials(
    parts: pl.LazyFrame,
    priority: Mapping[str, int] | None,
    aggregation: Aggregation = "mean",
    engine: EngineType = "auto",
) -> pl.LazyFrame:
    """Per (minute, device) partials, each pair once -> one value per minute.

    With ``priority`` the best-ranked device of each minute gives the value (ties between
    unlisted devices go to the first device id); without, the partials are one device's.
    """
    value = pl.col("sum") if aggregation == "sum" else pl.col("sum") / pl.col("count")
    # ``parts`` runs on ``engine``; what follows is a few thousand rows, where the
    # in-memory engine has far less fixed cost than the streaming one
    per_device = parts.select("minute", "device_id", value.alias("value")).collect(engine=engine)
    if priority is None or per_device.height == 0:
        return per_device.lazy().sort("minute")
    # one integer per device, in preference order: a cheap key to pick the best by
    devices = sorted(
        per_device["device_id"].unique().to_list(),
        key=lambda d: (priority.get(d, _unlisted(priority)), d),
    )
    # sorted by one integer (minute, then device order), the first row of each minute is
    # its best device's: several times cheaper than a two-key sort and a distinct pass
    minute = pl.col("minute")
    key = (minute.dt.epoch("ms") // MINUTE_MS) * (len(devices) + 1) + pl.col("order")
    return (
        per_device.lazy()
        .with_columns(_device_order(devices).alias("order"))
        .sort(key)
        .filter(minute.ne_missing(minute.shift(1)))
        .drop("order")
    )


def _device_order(devices: list[str]) -> pl.Expr:
    """Each row's device's position in ``devices``."""
    device = pl.col("device_id")
    if len(devices) > 16:
        order = {d: i for i, d in enumerate(devices)}
        return device.replace_strict(order, return_dtype=pl.Int32)
    expr: Any = pl
    for i, d in enumerate(devices):  # a short when-chain is cheaper than a mapping
        expr = expr.when(device == d).then(pl.lit(i, pl.Int32))
    return expr.otherwise(pl.lit(len(devices), pl.Int32))  # type: ignore[no-any-return]


def _agg(aggregation: Aggregation) -> pl.Expr:
    value = pl.col("value")
    return (value.sum() if aggregation == "sum" else value.mean()).alias("value")


def _best(name: str) -> pl.Expr:
    return pl.col(name).sort_by("rank", "device_id").first()


def per_minute(
    lf: pl.LazyFrame,
    priority: Mapping[str, int],
    scope: PriorityScope,
    aggregation: Aggregation = "mean",
) -> pl.LazyFrame:
    """De-duplicated rows -> one value per UTC minute, from the device priority picks."""
    if scope == "bucket":
        return from_partials(partials(lf), priority, aggregation)
    # per exact timestamp only the best device's reading survives
    lf = lf.with_columns(pl.col("ts").dt.truncate("1m").alias("minute"), rank(priority))
    survivors = lf.group_by("ts").agg(
        _best("minute"), _best("device_id"), _best("rank"), _best("value")
    )
    return survivors.group_by("minute").agg(_best("device_id"), _agg(aggregation)).sort("minute")


def single_device(lf: pl.LazyFrame, aggregation: Aggregation = "mean") -> pl.LazyFrame:
    """Rows of one device -> one value per UTC minute."""
    return from_partials(partials(lf), None, aggregation)
