"""A plain-Python statement of the per-minute rules, independent of the service's code.

Used by the tests (against generated data) and by ``generate_data.py`` (against what it
sent). Readings are ``(user_id, device_id, ts_ms, value)`` in the order they were
acknowledged; the last one sent for an identity wins.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

Reading = tuple[str, str, int, float]
Bucket = tuple[str, float, str]  # (minute "YYYY-MM-DDTHH:MM:SSZ", value, device_id)


def minute_label(ts_ms: int) -> str:
    start = ts_ms - ts_ms % 60_000
    return datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_series(
    readings: Iterable[Reading],
    user_id: str,
    start_ms: int,
    end_ms: int,
    priority: Mapping[str, int],
    scope: str = "bucket",
    device_id: str | None = None,
) -> list[Bucket]:
    latest: dict[tuple[str, int], float] = {}
    for user, device, ts, value in readings:
        if user == user_id and start_ms <= ts < end_ms and device_id in (None, device):
            latest[(device, ts)] = value  # last write wins
    unlisted = max(priority.values(), default=0) + 1

    def key(device: str) -> tuple[int, str]:
        return (priority.get(device, unlisted), device)

    if scope == "timestamp" and device_id is None:
        best_at: dict[int, str] = {}
        for device, ts in latest:
            if ts not in best_at or key(device) < key(best_at[ts]):
                best_at[ts] = device
        latest = {(d, ts): v for (d, ts), v in latest.items() if best_at[ts] == d}
    minutes: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (device, ts), value in latest.items():
        minutes[ts - ts % 60_000][device].append(value)
    series: list[Bucket] = []
    for minute in sorted(minutes):
        devices = minutes[minute]
        best = min(devices, key=key)
        if scope == "timestamp" and device_id is None:
            values = [v for vs in devices.values() for v in vs]
        else:
            values = devices[best]
        series.append((minute_label(minute), sum(values) / len(values), best))
    return series
