"""The query phase: a store loaded through the storage layer (compacted when the service can),
and per-minute query latencies over HTTP beside /health on the same server."""

from __future__ import annotations

import http.client
import importlib
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ops.bench_common import (
    MIN_SAMPLES,
    QUERY_DAY,
    SINGLE_PATH,
    fragment_count,
    iso,
    log,
    percentile,
)
from ops.bench_plan import Plan
from ops.server import Server

COMPACTION = "service.storage.compaction"


def user_day_frame(user: str, day: datetime, seq0: int, schema: pl.Schema) -> pl.DataFrame:
    """Both devices of one user, one reading per second for one UTC day, vectorised."""
    per_device = 86_400
    day_ms = int(day.timestamp() * 1000)
    i = pl.int_range(0, 2 * per_device, dtype=pl.Int64)
    second = i % per_device
    wave = (second.cast(pl.Float64) * (6.283185307179586 / per_device)).sin() * 25
    noise = (i.hash(seed=day_ms) % 11).cast(pl.Float64)
    return pl.select(
        pl.lit(user).alias("user_id"),
        pl.when(i < per_device)
        .then(pl.lit("device_a"))
        .otherwise(pl.lit("device_b"))
        .alias("device_id"),
        pl.from_epoch(second * 1000 + day_ms, time_unit="ms")
        .dt.replace_time_zone("UTC")
        .alias("ts"),
        (75 + wave + noise).alias("value"),
        (i + seq0).alias("seq"),
    ).cast(schema)


@dataclass(slots=True)
class StoreInfo:
    rows: int = 0
    fragments_loaded: int = 0
    load_s: float = 0.0
    compaction: str = "not run"
    fragments_after: int | None = None
    compact_s: float | None = None


def build_query_store(data_dir: Path, plan: Plan) -> tuple[StoreInfo, Any]:
    from service.schema import ROW_SCHEMA
    from service.storage.store import Store

    store = Store(data_dir, "bench", 10.0)
    store.ensure_layout()
    info = StoreInfo()
    started = time.perf_counter()
    seq = 1
    for u in range(plan.users):
        days = plan.long_days if u < plan.long_users else 1
        for d in range(days):
            frame = user_day_frame(
                f"user_{u:03d}", QUERY_DAY - timedelta(days=d), seq, pl.Schema(ROW_SCHEMA)
            )
            store.publish({"heart_rate": frame})  # one user-day per fragment
            seq += frame.height
            info.rows += frame.height
        if u % 10 == 9 or u == plan.users - 1:
            log(f"  loaded {u + 1}/{plan.users} users, {info.rows:,} rows")
    info.load_s = time.perf_counter() - started
    info.fragments_loaded = fragment_count(data_dir)
    return info, store


def compact_store(data_dir: Path, store: Any, info: StoreInfo) -> bool:
    """Run ``compact_all(store)`` when the service has it; True when it ran.

    ``store`` must be the instance that loaded the data: fragment names come from the
    worker name plus a per-instance counter, so a second ``Store(data_dir, "bench")``
    would name its output like the first input.
    """
    try:
        module = importlib.import_module(COMPACTION)
    except ModuleNotFoundError:
        info.compaction = f"no module {COMPACTION}: not compacted"
        return False
    except Exception as exc:  # a half-edited module must not sink the benchmark
        info.compaction = f"{COMPACTION} failed to import ({exc}): not compacted"
        return False
    compact_all: Callable[[Any], object] | None = getattr(module, "compact_all", None)
    if compact_all is None:
        info.compaction = f"{COMPACTION} has no compact_all: not compacted"
        return False
    log("compacting the query store with compact_all(store)")
    started = time.perf_counter()
    result = compact_all(store)
    info.compact_s = time.perf_counter() - started
    info.fragments_after = fragment_count(data_dir)
    info.compaction = f"compact_all returned {result!r}"
    return True


def has_compact_all() -> bool:
    try:
        module = importlib.import_module(COMPACTION)
    except Exception:
        return False
    return callable(getattr(module, "compact_all", None))


@dataclass(slots=True)
class Timing:
    p50: list[float] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def add(self, samples: list[float]) -> None:
        self.p50.append(percentile(samples, 50))
        self.p95.append(percentile(samples, 95))
        self.counts.append(len(samples))


def time_gets(
    port: int,
    paths: list[str],
    warmups: int,
    count: int,
    expect_count: int | None,
    budget_s: float,
) -> list[float]:
    """Sequential GETs on one keep-alive connection; latencies in ms after the warm-ups.

    At most ``count`` measured GETs, fewer when they use up ``budget_s`` (but at least
    MIN_SAMPLES); warm-ups stop early once they used a tenth of the budget.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    samples: list[float] = []
    began = time.monotonic()
    try:
        for i in range(warmups + count):
            warm = i < warmups
            if warm and i > 0 and time.monotonic() - began > budget_s / 10:
                continue
            enough = len(samples) >= MIN_SAMPLES
            if not warm and enough and time.monotonic() - began > budget_s:
                break
            elapsed = _timed_get(conn, paths[i % len(paths)], expect_count)
            if not warm:
                samples.append(elapsed)
    finally:
        conn.close()
    return samples


def _timed_get(conn: http.client.HTTPConnection, path: str, expect_count: int | None) -> float:
    """One GET on ``conn`` in ms; its answer must be 200 with ``expect_count`` minutes."""
    started = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
    if expect_count is not None:
        m = re.search(rb'"count":(\d+)\}\s*$', body[-40:])
        if m is None or int(m.group(1)) != expect_count:
            raise RuntimeError(f"GET {path}: count {m and m.group(1)!r}, {expect_count}")
    return elapsed


def query_paths(users: Sequence[str], start: datetime, end: datetime) -> list[str]:
    return [
        SINGLE_PATH
        + "?"
        + urllib.parse.urlencode({"user_id": u, "start": iso(start), "end": iso(end)})
        for u in users
    ]


@dataclass(slots=True)
class QueryResults:
    day: Timing = field(default_factory=Timing)
    month: Timing = field(default_factory=Timing)
    health: Timing = field(default_factory=Timing)
    rss_mb: list[float] = field(default_factory=list)


def measure_queries(server: Server, plan: Plan) -> QueryResults:
    """Query latencies: per run, /health (the ceiling), 1-day and long queries."""
    res = QueryResults()
    day_users = [f"user_{u:03d}" for u in range(plan.users)]
    long_users = [f"user_{u:03d}" for u in range(plan.long_users)]
    day_paths = query_paths(day_users, QUERY_DAY, QUERY_DAY + timedelta(days=1))
    month_start = QUERY_DAY - timedelta(days=plan.long_days - 1)
    month_paths = query_paths(long_users, month_start, QUERY_DAY + timedelta(days=1))
    for run in range(plan.runs):
        log(f"  query run {run + 1}/{plan.runs}")
        w, n, budget = plan.warmups, plan.queries, plan.query_budget_s
        res.health.add(time_gets(server.port, ["/health"], w, n, None, budget))
        res.day.add(time_gets(server.port, day_paths, w, n, 1440, budget))
        if long_users:
            minutes = 1440 * plan.long_days
            res.month.add(time_gets(server.port, month_paths, w, n, minutes, budget))
    res.rss_mb = server.peak_rss_mb()
    return res
