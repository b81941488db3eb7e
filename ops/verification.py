"""What ``generate_data.py`` reads back, held to the reference: every bucket of every metric
at a few intervals in one zone, with min, max and count, and every user's summary."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from reference import Reading, expected_data, expected_summary
from reference_time import MINUTE_MS, label

Get = Callable[[str], "tuple[int, bytes] | None"]  # GET a path: (status, body), None: no answer
STATS = "min,max,count"
REL = 1e-9


def differences(got: object, want: object, where: str) -> list[str]:
    """Where ``got`` is not ``want``: numbers within ``REL``, integers must be integers."""
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        same = abs(got - want) <= REL * max(abs(want), 1e-300)
        return [] if same else [f"{where}: {got!r}, expected {want!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        if sorted(got) != sorted(want):
            return [f"{where}: fields {sorted(got)}, expected {sorted(want)}"]
        return [d for k in want for d in differences(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        pairs = enumerate(zip(got, want, strict=True))
        return [d for n, (g, w) in pairs for d in differences(g, w, f"{where}[{n}]")]
    if got != want or type(got) is not type(want):
        return [f"{where}: {got!r:.300}, expected {want!r:.300}"]
    return []


def fetch(get: Get, path: str, params: dict[str, str]) -> tuple[int, object]:
    result = get(f"{path}?{urlencode(params)}")
    status, payload = result if result is not None else (0, b"")
    return status, json.loads(payload) if status == 200 else payload[:200]


def verify_series(
    get: Get,
    readings: Sequence[Reading],
    metric: str,
    span: tuple[int, int],
    priority: dict[str, int],
    scope: str,
    interval: str,
    tz: str,
) -> tuple[int, list[str]]:
    """The buckets checked and what differed in one series."""
    user = readings[0][0]
    want = expected_data(
        readings, user, *span, priority, scope, metric=metric, interval=interval, tz=tz,
        stats=STATS.split(","),
    )  # fmt: skip
    params = {"user_id": user, "start": label(span[0], "UTC"), "end": label(span[1], "UTC")}
    params |= {"interval": interval, "tz": tz, "stats": STATS}
    path = "/metrics/" + metric.replace("_", "-")
    status, doc = fetch(get, path, params)
    where = f"{user} {metric} {interval}"
    if status != 200:
        return len(want), [] if status == 404 and not want else [f"{where}: {status} {doc!r}"]
    want_doc = {"user_id": user, "data": want, "count": len(want)}
    return len(want), differences(doc, want_doc, where)[:3]


def verify(
    get: Get,
    acked: Sequence[tuple[str, Reading]],
    priority: dict[str, int],
    scope: str,
    intervals: Sequence[str],
    tz: str,
) -> list[str]:
    """Every user's series at each of ``intervals`` and summary against the reference."""
    by_user: dict[str, dict[str, list[Reading]]] = defaultdict(lambda: defaultdict(list))
    for metric, reading in acked:
        by_user[reading[0]][metric].append(reading)
    mismatches: list[str] = []
    buckets = 0
    for user, metrics in sorted(by_user.items()):
        stamps = [r[2] for readings in metrics.values() for r in readings]
        lo, hi = min(stamps), max(stamps)
        span = (lo - lo % MINUTE_MS, hi - hi % MINUTE_MS + MINUTE_MS)
        for metric, readings in sorted(metrics.items()):
            for interval in intervals:
                n, found = verify_series(get, readings, metric, span, priority, scope, interval, tz)
                buckets += n
                mismatches += found
        want = expected_summary(metrics, user, *span, priority, scope, tz)
        params = {"user_id": user, "start": label(span[0], tz), "end": label(span[1], tz), "tz": tz}
        status, doc = fetch(get, "/summary", params)
        if status != 200:
            mismatches.append(f"{user} summary: {status} {doc!r}")
        else:
            mismatches += differences(doc, want, f"{user} summary")[:3]
    if not mismatches:
        print(f"verify: {len(by_user)} users, {buckets} buckets and summaries, all match")
    return mismatches
