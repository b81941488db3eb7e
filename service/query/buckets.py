"""Series buckets from priority partials: any interval, local days, optional statistics.

Input: ``query.aggregate.priority_partials`` output. A bucket aggregates the readings that
survived priority: the mean of them for a mean metric, their sum for a sum metric, and
their ``min``, ``max`` and ``count``. ``1h`` and ``1d`` buckets follow the local clock of
the time zone (a local day may last 23 or 25 hours); narrower ones align to UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import polars as pl

from service.query.aggregate import device_order, preference
from service.schema import DAY_MS, MetricSpec

# interval -> (width in ms, Polars duration); the width of a day is nominal (range limits)
INTERVALS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "1d": DAY_MS,
}
LOCAL = frozenset({"1h", "1d"})  # intervals cut on the local clock
STATS = ("min", "max", "count")


@dataclass(frozen=True, slots=True)
class Shape:
    """How a series is bucketed and what each bucket carries."""

    interval: str = "1m"
    tz: str = "UTC"
    stats: tuple[str, ...] = ()

    @property
    def slot(self) -> str:
        """The priority slot: the second for ``1s`` series, else the minute."""
        return "1s" if self.interval == "1s" else "1m"

    @property
    def extremes(self) -> bool:
        return "min" in self.stats or "max" in self.stats


@cache
def known_zone(name: str) -> bool:
    """Whether Polars (and so the query) knows the IANA zone ``name``."""
    try:
        pl.Series([0], dtype=pl.Datetime("ms", "UTC")).dt.convert_time_zone(name)
    except (pl.exceptions.PolarsError, ValueError):
        return False
    return True


def widen(
    parts: pl.DataFrame,
    shape: Shape,
    spec: MetricSpec,
    priority: Mapping[str, int] | None,
    one_per_slot: bool = False,
) -> pl.DataFrame:
    """Priority partials -> one row per bucket: ``bucket`` (in ``shape.tz``), ``value``,
    ``device_id`` [, ``min``, ``max``], ``count``; sorted by bucket.

    ``one_per_slot``: the partials hold one device per slot (bucket scope, or one device).
    """
    slot = pl.col("slot")
    total = pl.col("sum")
    value = total if spec.aggregation == "sum" else total / pl.col("count")
    if one_per_slot and shape.interval == shape.slot:  # the common case: nothing to merge
        return parts.sort("slot").select(
            slot.dt.convert_time_zone(shape.tz).alias("bucket"),
            pl.exclude("slot"),
            value.alias("value"),
        )
    if shape.interval in LOCAL:
        bucket = slot.dt.convert_time_zone(shape.tz).dt.truncate(shape.interval)
    else:
        bucket = slot.dt.truncate(shape.interval).dt.convert_time_zone(shape.tz)
    aggs = [pl.col("sum").sum(), pl.col("count").sum()]
    if shape.extremes:
        aggs += [pl.col("min").min(), pl.col("max").max()]
    per_device = parts.group_by(bucket.alias("bucket"), "device_id").agg(aggs)
    devices = preference(priority, per_device["device_id"].unique().to_list())
    # the bucket's device: at the slot's own width the best one; wider, the one that
    # supplied most readings, ties to the best
    order = [pl.col("bucket"), device_order(devices)]
    descending = [False, False]
    if shape.interval != shape.slot:
        order.insert(1, pl.col("count"))
        descending.insert(1, True)
    ranked = per_device.sort(order, descending=descending)
    out = ranked.group_by("bucket", maintain_order=True).agg(
        pl.col("device_id").first(),
        *(pl.col(c).sum() for c in ("sum", "count")),
        *((pl.col("min").min(), pl.col("max").max()) if shape.extremes else ()),
    )
    return out.with_columns(value.alias("value"))


def label(shape: Shape) -> pl.Expr:
    """A bucket's start as text: with the zone's offset, or ``Z`` in UTC."""
    bucket = pl.col("bucket")
    if shape.tz == "UTC":
        return bucket.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return bucket.dt.strftime("%Y-%m-%dT%H:%M:%S%:z")


def columns(buckets: pl.DataFrame, shape: Shape, spec: MetricSpec) -> pl.DataFrame:
    """The buckets as the series' fields, in their order."""
    number = pl.Int64 if spec.integer else pl.Float64
    cols = [
        label(shape).alias("timestamp"),
        pl.col("value").cast(number).alias(spec.field),
        pl.col("device_id"),
    ]
    for name in shape.stats:
        cols.append(pl.col(name).cast(pl.Int64 if name == "count" else number))
    return buckets.select(cols)
