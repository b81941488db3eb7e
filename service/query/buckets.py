"""Series buckets from priority partials: any interval, local days, optional statistics.

Input: ``query.aggregate.priority_partials`` output. A bucket aggregates the readings that
survived priority: the mean of them for a mean metric, their sum for a sum metric, and
their ``min``, ``max`` and ``count``. ``1h`` and ``1d`` buckets follow the local clock of
the time zone (a local day may last 23 or 25 hours); narrower ones align to UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from service.query.aggregate import PLAIN, SMALL, device_order, distinct, preference
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
    """Whether the IANA zone ``name`` is known to the query."""
    # both zone databases must know it: Polars' cuts hours and writes offsets, Python's
    # (the tzdata package when the system has none) finds local midnights
    try:
        ZoneInfo(name)
        pl.Series([0], dtype=pl.Datetime("ms", "UTC")).dt.convert_time_zone(name)
    except (pl.exceptions.PolarsError, ValueError, ZoneInfoNotFoundError):
        return False
    return True


# longer than 40 lines: one plan read top to bottom, its steps sharing one key encoding
# (bucket start x device count + device order); split, each part would need all of it
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
        plan = (
            parts.lazy()
            .sort("slot")
            .select(
                slot.dt.convert_time_zone(shape.tz).alias("bucket"),
                pl.exclude("slot"),
                value.alias("value"),
            )
        )
        return plan.collect(engine=SMALL, optimizations=PLAIN)
    devices = preference(priority, distinct(parts["device_id"]))
    n = len(devices) + 1
    # one integer key per (bucket, device): a far cheaper group-by than on the pair
    starts = bucket_starts(parts["slot"].dt.epoch("ms"), shape)
    aggs = [pl.col("sum").sum(), pl.col("count").sum()]
    if shape.extremes:
        aggs += [pl.col("min").min(), pl.col("max").max()]
    keyed = parts.select((starts * n + device_order(devices)).alias("key"), *_PARTS[: len(aggs)])
    if keyed["key"].is_sorted():  # partials come in time order: group runs, not a hash
        keyed = keyed.with_columns(pl.col("key").set_sorted())
    per_device = (
        keyed.group_by("key", maintain_order=True)
        .agg(aggs)
        .with_columns(pl.col("key") // n, (pl.col("key") % n).alias("order"))
    )
    # the bucket's device: at the slot's own width the best one; wider, the one that
    # supplied most readings, ties to the best
    if shape.interval == shape.slot:
        ranked = per_device.sort("key", "order")
    else:
        ranked = per_device.sort("key", "count", "order", descending=[False, True, False])
    out = ranked.group_by("key", maintain_order=True).agg(
        pl.col("order").first(),
        *(pl.col(c).sum() for c in ("sum", "count")),
        *((pl.col("min").min(), pl.col("max").max()) if shape.extremes else ()),
    )
    bucket = pl.from_epoch("key", time_unit="ms").dt.replace_time_zone("UTC")
    return out.select(
        bucket.dt.convert_time_zone(shape.tz).alias("bucket"),
        pl.col("order")
        .replace_strict(dict(enumerate(devices)), return_dtype=pl.String)
        .alias("device_id"),
        pl.exclude("key", "order"),
        value.alias("value"),
    )


_PARTS = ("sum", "count", "min", "max")


# a local hour lasts at least 30 minutes (a half-hour clock change): instants this far apart
# fall into every local hour at least once
_HOUR_GRID_MS = 15 * 60_000


def bucket_starts(slots: pl.Series, shape: Shape) -> pl.Series:
    """The start (epoch ms) of the bucket of each slot (epoch ms)."""
    if shape.interval not in LOCAL or shape.tz == "UTC":
        width = INTERVALS[shape.interval]
        return slots // width * width
    low, high = int(slots.min()), int(slots.max())  # type: ignore[arg-type]
    if shape.interval == "1d":
        starts = _local_midnights(low, high, shape.tz)
    else:
        starts = _local_hours(low, high, shape.tz)
    return _assign(slots, starts)


def _local_midnights(low: int, high: int, tz: str) -> pl.Series:
    """The first instant of each local date from ``low``'s to ``high``'s (epoch ms)."""
    zone = ZoneInfo(tz)
    first = datetime.fromtimestamp(low / 1000, zone).date()
    days = (datetime.fromtimestamp(high / 1000, zone).date() - first).days + 1
    # fold=0: a midnight the clock skips is read with the offset before the change, which
    # is the date's first instant; a repeated one as its first occurrence
    midnights = (datetime.combine(first + timedelta(d), time(), zone) for d in range(days))
    return pl.Series([round(m.timestamp() * 1000) for m in midnights], dtype=pl.Int64)


def _local_hours(low: int, high: int, tz: str) -> pl.Series:
    """The start of every local hour that overlaps ``[low, high]`` (epoch ms): each of a
    grid of instants cut on the local clock by Polars."""
    step = _HOUR_GRID_MS
    grid = pl.int_range(low // step * step - step, high + 2 * step, step, eager=True)
    local = pl.from_epoch(grid, time_unit="ms").dt.replace_time_zone("UTC")
    cut = local.dt.convert_time_zone(tz).dt.truncate("1h")
    return cut.dt.epoch("ms").unique().sort()


def _assign(slots: pl.Series, starts: pl.Series) -> pl.Series:
    """For each slot, the last of the sorted ``starts`` at or before it."""
    if not slots.is_sorted():
        return starts.gather(starts.search_sorted(slots, side="right") - 1)
    # in time order: mark the row where each bucket begins and carry it forward (a
    # search per bucket, not per slot)
    marks = pl.DataFrame({"row": slots.search_sorted(starts), "start": starts})
    marks = marks.filter(pl.col("row") < len(slots)).group_by("row").agg(pl.max("start"))
    carried = pl.repeat(None, len(slots), dtype=pl.Int64, eager=True)
    carried = carried.scatter(marks["row"], marks["start"])
    return carried.forward_fill()


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
