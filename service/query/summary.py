"""A user's overview of a range: per metric the totals after de-duplication, last write wins
and device priority (exactly as a series counts), the resting heart rate, and the devices.

``resting`` is the lowest mean of five consecutive clock minutes that all have heart-rate
readings (each minute weighs the same: the mean of its five minute values).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from service.config import PriorityScope
from service.query.aggregate import distinct
from service.query.reader import Reader
from service.query.sources import Query
from service.schema import METRICS, MINUTE_MS

RESTING_MINUTES = 5


def summary(
    reader: Reader, user_id: str, start_ms: int, end_ms: int, tz: str
) -> dict[str, Any] | None:
    """The summary body, or None when the range holds no reading of any metric. Blocking."""
    found: dict[str, pl.DataFrame] = {}
    for name in METRICS:
        parts = reader.run(Query(name, user_id, start_ms, end_ms, extremes=name == "heart_rate"))
        if parts is not None:
            found[name] = parts
    if not found:
        return None
    body: dict[str, Any] = {
        "user_id": user_id,
        "start": stamp(start_ms, tz),
        "end": stamp(end_ms, tz),
    }
    for name, spec in METRICS.items():
        parts = found.get(name)
        if parts is None:
            body[name] = None
        elif spec.aggregation == "mean":
            body[name] = _mean_metric(parts, reader.scope)
        else:
            total = parts["sum"].sum()
            body[name] = {
                "total": round(total) if spec.integer else total,
                "minutes": minutes(parts, reader.scope),
            }
    body["devices"] = _devices(list(found.values()))
    return body


def minutes(parts: pl.DataFrame, scope: PriorityScope) -> int:
    """The minutes with readings: in bucket scope priority left one row per minute."""
    return parts.height if scope == "bucket" else parts["slot"].n_unique()


def _mean_metric(parts: pl.DataFrame, scope: PriorityScope) -> dict[str, Any]:
    count = int(parts["count"].sum())
    return {
        "mean": parts["sum"].sum() / count,
        "min": parts["min"].min(),
        "max": parts["max"].max(),
        "count": count,
        "minutes": minutes(parts, scope),
        "resting": resting(parts),
    }


def resting(parts: pl.DataFrame) -> float | None:
    """The lowest mean over ``RESTING_MINUTES`` consecutive minutes with readings."""
    if len(distinct(parts["device_id"])) == 1:  # one row per minute already
        minutes = parts.select("slot", (pl.col("sum") / pl.col("count")).alias("mean"))
        if not minutes["slot"].is_sorted():
            minutes = minutes.sort("slot")
    else:  # timestamp scope: several devices' survivors in a minute
        minutes = (
            parts.group_by("slot")
            .agg((pl.col("sum").sum() / pl.col("count").sum()).alias("mean"))
            .sort("slot")
        )
    span = (RESTING_MINUTES - 1) * MINUTE_MS
    epoch = pl.col("slot").dt.epoch("ms")
    windows = minutes.select(
        pl.col("mean").rolling_mean(RESTING_MINUTES).alias("window"),
        # the window is whole when its first minute lies exactly four minutes back
        (epoch - epoch.shift(RESTING_MINUTES - 1) == span).alias("whole"),
    ).filter(pl.col("whole"))
    low = windows["window"].min()
    return None if low is None else float(low)  # type: ignore[arg-type]


def _devices(found: list[pl.DataFrame]) -> list[dict[str, Any]]:
    ids = {d for df in found for d in distinct(df["device_id"])}
    if len(ids) == 1:  # the usual case: no group-by over every minute of every metric
        slots = pl.concat([df["slot"] for df in found])
        readings = sum(int(df["count"].sum()) for df in found)
        return [{"device_id": ids.pop(), "readings": readings, "minutes": slots.n_unique()}]
    parts = pl.concat([df.select("slot", "device_id", "count") for df in found])
    per_device = (
        parts.group_by("device_id")
        .agg(pl.col("count").sum().alias("readings"), pl.col("slot").n_unique().alias("minutes"))
        .sort(["readings", "device_id"], descending=[True, False])
    )
    return per_device.to_dicts()


def stamp(ms: int, tz: str) -> str:
    """An instant as RFC 3339 text in ``tz`` (``Z`` in UTC), milliseconds when it has any."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    if tz != "UTC":
        moment = moment.astimezone(ZoneInfo(tz))
    text = moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return text.replace("+00:00", "Z") if tz == "UTC" else text
