"""A plain-Python statement of the series and summary rules, independent of the service's code.

Used by the tests (against generated data) and by ``generate_data.py`` (against what it
sent). Readings of one metric are ``(user_id, device_id, ts_ms, value)`` in the order they
were acknowledged; the last one sent for an identity wins. Written for reading, not speed:
each step below is one rule of ``notes/semantics.md``. Time rules are in ``reference_time``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from reference_time import MINUTE_MS, bucket_start, label, priority_bucket

Reading = tuple[str, str, int, float]
Bucket = tuple[str, float, str]  # (minute "YYYY-MM-DDTHH:MM:SSZ", value, device_id)
Survivor = tuple[str, int, float]  # (device_id, ts_ms, value)

AGGREGATION = {"heart_rate": "mean", "steps": "sum", "calories": "sum"}
INTEGER_METRICS = ("steps",)
STATS = ("min", "max", "count")


def minute_label(ts_ms: int) -> str:
    return label(ts_ms - ts_ms % MINUTE_MS, "UTC")


def rank(priority: Mapping[str, int]) -> Callable[[str], tuple[int, str]]:
    """Sort key of devices, best first: listed by rank, then unlisted ones by id."""
    unlisted = max(priority.values(), default=0) + 1
    return lambda device: (priority.get(device, unlisted), device)


def survivors(
    readings: Iterable[Reading],
    user_id: str,
    start_ms: int,
    end_ms: int,
    priority: Mapping[str, int],
    scope: str = "bucket",
    device_id: str | None = None,
    interval: str = "1m",
) -> list[Survivor]:
    """The user's readings in ``[start, end)`` that priority keeps, after last-write-wins."""
    latest: dict[tuple[str, int], float] = {}
    for user, device, ts, value in readings:
        if user == user_id and start_ms <= ts < end_ms and device_id in (None, device):
            latest[(device, ts)] = value  # last write wins
    if device_id is not None:
        return [(d, ts, v) for (d, ts), v in latest.items()]
    key = rank(priority)
    if scope == "timestamp":
        best_at: dict[int, str] = {}
        for device, ts in latest:
            if ts not in best_at or key(device) < key(best_at[ts]):
                best_at[ts] = device
        return [(d, ts, v) for (d, ts), v in latest.items() if best_at[ts] == d]
    best_in: dict[int, str] = {}  # per priority bucket (UTC minute, or second for 1s)
    for device, ts in latest:
        p = priority_bucket(ts, interval)
        if p not in best_in or key(device) < key(best_in[p]):
            best_in[p] = device
    return [
        (d, ts, v) for (d, ts), v in latest.items() if best_in[priority_bucket(ts, interval)] == d
    ]


def bucket_device(devices: Sequence[str], interval: str, priority: Mapping[str, int]) -> str:
    """The device named by a bucket whose surviving readings came from ``devices``."""
    key = rank(priority)
    if interval in ("1s", "1m"):  # the bucket is its priority bucket: the best survivor
        return min(devices, key=key)
    supplied = Counter(devices)  # wider: the device that supplied most, ties by priority
    return min(supplied, key=lambda d: (-supplied[d], key(d)))


def aggregate(metric: str, values: Sequence[float]) -> float | int:
    if AGGREGATION[metric] == "mean":
        return math.fsum(values) / len(values)
    total = math.fsum(values)
    return round(total) if metric in INTEGER_METRICS else total


def number(metric: str, value: float) -> float | int:
    return round(value) if metric in INTEGER_METRICS else value


def expected_data(
    readings: Iterable[Reading],
    user_id: str,
    start_ms: int,
    end_ms: int,
    priority: Mapping[str, int],
    scope: str = "bucket",
    device_id: str | None = None,
    *,
    metric: str = "heart_rate",
    interval: str = "1m",
    tz: str = "UTC",
    stats: Sequence[str] = (),
) -> list[dict[str, object]]:
    """The ``data`` of ``GET /metrics/<metric>``: one dict per bucket, by start ascending."""
    kept = survivors(readings, user_id, start_ms, end_ms, priority, scope, device_id, interval)
    buckets: dict[int, list[Survivor]] = defaultdict(list)
    for survivor in kept:
        buckets[bucket_start(survivor[1], interval, tz)].append(survivor)
    data: list[dict[str, object]] = []
    for start in sorted(buckets):
        devices = [d for d, _, _ in buckets[start]]
        values = [v for _, _, v in buckets[start]]
        item: dict[str, object] = {
            "timestamp": label(start, tz),
            metric: aggregate(metric, values),
            "device_id": bucket_device(devices, interval, priority),
        }
        every = {"min": number(metric, min(values)), "max": number(metric, max(values))}
        every["count"] = len(values)
        item.update({name: every[name] for name in STATS if name in stats})
        data.append(item)
    return data


def expected_series(
    readings: Iterable[Reading],
    user_id: str,
    start_ms: int,
    end_ms: int,
    priority: Mapping[str, int],
    scope: str = "bucket",
    device_id: str | None = None,
) -> list[Bucket]:
    """The per-minute heart-rate series in UTC as ``(timestamp, value, device_id)``."""
    data = expected_data(readings, user_id, start_ms, end_ms, priority, scope, device_id)
    series: list[Bucket] = []
    for item in data:
        value = item["heart_rate"]
        assert isinstance(value, float)
        series.append((str(item["timestamp"]), value, str(item["device_id"])))
    return series


def resting(minute_means: Mapping[int, float]) -> float | None:
    """The lowest mean of five per-minute means over 5 consecutive clock minutes that all
    have heart-rate readings; None when no such run exists."""
    runs = [
        [minute_means[m + k * MINUTE_MS] for k in range(5)]
        for m in minute_means
        if all(m + k * MINUTE_MS in minute_means for k in range(5))
    ]
    return min((math.fsum(run) / 5 for run in runs), default=None)


def expected_summary(
    readings: Mapping[str, Iterable[Reading]],
    user_id: str,
    start_ms: int,
    end_ms: int,
    priority: Mapping[str, int],
    scope: str = "bucket",
    tz: str = "UTC",
) -> dict[str, object] | None:
    """The body of ``GET /summary`` over ``readings`` by metric; None when it is a 404."""
    kept = {
        metric: survivors(readings.get(metric, ()), user_id, start_ms, end_ms, priority, scope)
        for metric in AGGREGATION
    }
    if not any(kept.values()):
        return None
    body: dict[str, object] = {"user_id": user_id, "start": label(start_ms, tz)}
    body["end"] = label(end_ms, tz)
    for metric, rows in kept.items():
        values = [v for _, _, v in rows]
        minutes = {ts - ts % MINUTE_MS for _, ts, _ in rows}
        if not rows:
            body[metric] = None
        elif metric == "heart_rate":
            per_minute: dict[int, list[float]] = defaultdict(list)
            for _, ts, v in rows:
                per_minute[ts - ts % MINUTE_MS].append(v)
            body[metric] = {
                "mean": math.fsum(values) / len(values),
                "min": min(values),
                "max": max(values),
                "count": len(values),
                "minutes": len(minutes),
                "resting": resting({m: math.fsum(vs) / len(vs) for m, vs in per_minute.items()}),
            }
        else:
            body[metric] = {"total": aggregate(metric, values), "minutes": len(minutes)}
    body["devices"] = summary_devices([r for rows in kept.values() for r in rows])
    return body


def summary_devices(rows: Sequence[Survivor]) -> list[dict[str, object]]:
    """Per device over every metric: surviving readings supplied, and the distinct minutes
    in which it supplied any; most readings first, then by id."""
    readings: Counter[str] = Counter(d for d, _, _ in rows)
    minutes: dict[str, set[int]] = defaultdict(set)
    for device, ts, _ in rows:
        minutes[device].add(ts - ts % MINUTE_MS)
    order = sorted(readings, key=lambda d: (-readings[d], d))
    return [{"device_id": d, "readings": readings[d], "minutes": len(minutes[d])} for d in order]
