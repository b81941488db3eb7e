"""What every part of the benchmark shares: the routes, the fixed dates, the targets, the
progress log and the statistics."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

SINGLE_PATH = "/metrics/heart-rate"
BATCH_PATH = "/metrics/heart-rate/batch"
PHASES = ("writes", "queries", "fresh", "streams", "auth", "floor")
DEFAULT_PHASES = PHASES[:-1]  # the floor phase runs when asked for
QUERY_DAY = datetime(2024, 1, 15, tzinfo=UTC)  # the day every user of the query store has
DAY_HISTORY_MS = 5.63  # the 1-day query's p50 in the last query-phase run (BENCHMARKS.md)
WRITE_BASE = datetime(2024, 1, 1, tzinfo=UTC)  # bench_post.lua's first timestamp
MIN_SAMPLES = 10  # measured queries per run and kind, whatever the time budget

TARGETS = {
    "single_raw_share": 0.5,  # of the bare ASGI app's rate, same sitting
    "single_p99": 20.0,
    "batch_p99": 50.0,
    "day_p50": 10.0,
    "month_p50": 60.0,
    "summary_month_p50": 20.0,
    "summary_day_p50": 10.0,
    "hourly_day_p50": 10.0,
    "daily_year_p50": 50.0,
    "rss": 300.0,
}
# batch readings/s per connection count
BATCH_TARGETS = {4: 1_500_000.0, 64: 2_000_000.0}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fragment_count(data_dir: Path) -> int:
    doc = json.loads((data_dir / "manifest.json").read_text())
    return len(doc["fragments"])


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
