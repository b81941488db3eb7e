"""The query phase: a store loaded through the storage layer (compacted when the service can),
and query latencies over HTTP, each beside /health on the same server right before it.

The store: ``--users`` users x 2 devices x 1 Hz x 1 day of heart rate (``--long-days`` for
the first ``--long-users``), plus one year user: ``--year-days`` days of per-minute heart
rate, steps and calories from one device. Queries: per-minute series of one day and of
the long range; for the year user ``/summary`` over 30 days and over 1 day, 1-day series
at ``interval=1h`` (also of the 1 Hz users) and year-long series at ``interval=1d`` in
Europe/Berlin. Every answer is checked (status, bucket count or summary fields), so a
broken route cannot yield a fast figure.
"""

from __future__ import annotations

import http.client
import importlib
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
from ops.bench_table import Table
from ops.server import Server

COMPACTION = "service.storage.compaction"
QUERY_TABLE = "query"  # the query phase's Delta table, under the --store's table root
YEAR_USER = "user_year"  # sorts after user_000..user_999
YEAR_DEVICE = "watch"
YEAR_METRICS = ("heart_rate", "steps", "calories")
DAY_MINUTES = 1440
BERLIN = "Europe/Berlin"


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


def year_frames(
    first_day: datetime, days: int, seq0: int, schema: pl.Schema
) -> dict[str, pl.DataFrame]:
    """The year user's per-minute readings of each metric over ``days`` UTC days from
    ``first_day``, one device, in time order (1,440 rows a day), vectorised: heart rate
    around 68 bpm with a daily wave, whole steps 0-120 a minute from 07:00 to 23:00 UTC
    (0 at night), calories from a resting 1.1 kcal a minute plus 0.045 per step."""
    n = days * DAY_MINUTES
    start_ms = int(first_day.timestamp() * 1000)
    i = pl.int_range(0, n, dtype=pl.Int64)
    minute = i % DAY_MINUTES
    wave = (minute.cast(pl.Float64) * (6.283185307179586 / DAY_MINUTES)).sin()
    noise = (i.hash(seed=start_ms) % 11).cast(pl.Float64)
    awake = (minute >= 7 * 60) & (minute < 23 * 60)
    steps = pl.when(awake).then(i.hash(seed=start_ms + 1) % 121).otherwise(0).cast(pl.Float64)
    ts = pl.from_epoch(i * 60_000 + start_ms, time_unit="ms").dt.replace_time_zone("UTC")
    values = pl.select(
        ts.alias("ts"),
        (68 + 18 * wave + noise).alias("heart_rate"),
        steps.alias("steps"),
        (1.1 + 0.045 * steps + noise * 0.01).alias("calories"),
    )
    return {
        metric: values.select(
            pl.lit(YEAR_USER).alias("user_id"),
            pl.lit(YEAR_DEVICE).alias("device_id"),
            "ts",
            pl.col(metric).alias("value"),
            # interleaved, so each day's rows of every metric come after the day before's (a
            # Delta table's exactly-once check takes seq as a WAL's order)
            (pl.int_range(0, n, dtype=pl.Int64) * len(YEAR_METRICS) + seq0 + k).alias("seq"),
        ).cast(schema)
        for k, metric in enumerate(YEAR_METRICS)
    }


def year_first_day(plan: Plan) -> datetime:
    """The year user's first UTC day: its last is QUERY_DAY."""
    return QUERY_DAY - timedelta(days=plan.year_days - 1)


@dataclass(slots=True)
class StoreInfo:
    rows: int = 0
    fragments_loaded: int = 0
    load_s: float = 0.0
    year_rows: int = 0
    year_load_s: float = 0.0
    compaction: str = "not run"
    fragments_after: int | None = None
    compact_s: float | None = None
    files: str = "query store fragments"  # what fragments_loaded counts


def build_query_store(data_dir: Path, plan: Plan, table: Table) -> tuple[StoreInfo, Any]:
    """Load the query store through the storage layer: ``Store`` on ``data_dir``, or with a
    Delta ``table`` a ``DeltaStore`` appending to its table ``QUERY_TABLE``."""
    from service.schema import ROW_SCHEMA
    from service.storage.store import Store

    store = Store(data_dir, "bench", 10.0)
    if table.delta:
        from service.storage.delta import DeltaStore

        store = DeltaStore(data_dir, "bench", 10.0, table.uri(QUERY_TABLE), table.options() or {})
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
    if plan.year_days:
        year_started = time.perf_counter()
        frames = year_frames(year_first_day(plan), plan.year_days, seq, pl.Schema(ROW_SCHEMA))
        for d in range(plan.year_days):
            # one fragment per metric and day, the three in one manifest commit
            store.publish({m: f.slice(d * DAY_MINUTES, DAY_MINUTES) for m, f in frames.items()})
        info.year_rows = sum(f.height for f in frames.values())
        info.rows += info.year_rows
        info.year_load_s = time.perf_counter() - year_started
        log(f"  loaded {YEAR_USER}: {plan.year_days} days, {info.year_rows:,} rows")
    info.load_s = time.perf_counter() - started
    info.fragments_loaded = _file_count(data_dir, table)
    if table.delta:
        info.files = "query table's Delta files"
    return info, store


def _file_count(data_dir: Path, table: Table) -> int:
    """Fragments in the manifest, or files in the Delta table."""
    if not table.delta:
        return fragment_count(data_dir)
    from deltalake import DeltaTable

    return len(DeltaTable(table.uri(QUERY_TABLE), storage_options=table.options()).file_uris())


def compact_table(table: Table, info: StoreInfo) -> None:
    """The Delta table's compaction (``delta_compaction.compact``), every day partition with
    two files or more rewritten as one sorted file, as ``ops/maint compact-table`` does."""
    from service.storage import delta_compaction

    log("compacting the query table with delta_compaction.compact")
    started = time.perf_counter()
    report = delta_compaction.compact(table.uri(QUERY_TABLE), table.options(), 2)
    info.compact_s = time.perf_counter() - started
    info.fragments_after = _file_count(Path(), table)
    info.compaction = f"delta_compaction.compact: {len(report.rewritten)} partitions rewritten"
    if report.conflicted:
        raise RuntimeError(f"compaction conflicted on {report.conflicted}: nothing else writes")


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


Check = Callable[[bytes], str | None]  # an answer's body -> what is wrong with it, or None


def bucket_count(expected: int) -> Check:
    """A series answer must end with ``"count":<expected>}``."""

    def check(body: bytes) -> str | None:
        m = re.search(rb'"count":(\d+)\}\s*$', body[-40:])
        if m is None or int(m.group(1)) != expected:
            return f"count {m and m.group(1)!r}, expected {expected}"
        return None

    return check


def summary_minutes(expected: int) -> Check:
    """A summary answer must count ``expected`` minutes of every metric, with a resting
    heart rate, from one device."""

    def check(body: bytes) -> str | None:
        doc = json.loads(body)
        for metric in YEAR_METRICS:
            part = doc.get(metric) or {}
            if part.get("minutes") != expected:
                return f"{metric} minutes {part.get('minutes')!r}, expected {expected}"
        if doc["heart_rate"].get("resting") is None:
            return "no resting heart rate"
        if [d.get("device_id") for d in doc.get("devices", [])] != [YEAR_DEVICE]:
            return f"devices {doc.get('devices')!r}"
        return None

    return check


@dataclass(frozen=True, slots=True)
class QueryKind:
    """One kind of query: the GETs it cycles through, how each answer is checked, and the
    TARGETS key of its p50 (None: no target)."""

    label: str
    paths: tuple[str, ...]
    check: Check
    target: str | None = None


def time_gets(
    port: int,
    paths: Sequence[str],
    warmups: int,
    count: int,
    check: Check | None,
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
            elapsed = _timed_get(conn, paths[i % len(paths)], check)
            if not warm:
                samples.append(elapsed)
    finally:
        conn.close()
    return samples


def _timed_get(conn: http.client.HTTPConnection, path: str, check: Check | None) -> float:
    """One GET on ``conn`` in ms; its answer must be 200 and pass ``check`` (timed before
    the check, so checking costs the figure nothing)."""
    started = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
    problem = None if check is None else check(body)
    if problem is not None:
        raise RuntimeError(f"GET {path}: {problem}")
    return elapsed


def query_paths(
    users: Sequence[str],
    start: datetime,
    end: datetime,
    route: str = SINGLE_PATH,
    **options: str,
) -> tuple[str, ...]:
    """GETs of ``route`` for each user; UTC bounds as ``Z``, others with their offset."""

    def stamp(dt: datetime) -> str:
        return iso(dt) if dt.utcoffset() == timedelta(0) else dt.isoformat()

    bounds = {"start": stamp(start), "end": stamp(end)}
    return tuple(
        route + "?" + urllib.parse.urlencode({"user_id": u, **bounds, **options}) for u in users
    )


def query_kinds(plan: Plan, *, year: bool = True) -> dict[str, QueryKind]:
    """Every kind of query to measure, by key; the year user's only with ``year``."""
    day_end = QUERY_DAY + timedelta(days=1)
    day_users = [f"user_{u:03d}" for u in range(plan.users)]
    long_users = [f"user_{u:03d}" for u in range(plan.long_users)]
    long_start = QUERY_DAY - timedelta(days=plan.long_days - 1)
    kinds = {
        "day": QueryKind(
            "1-day query",
            query_paths(day_users, QUERY_DAY, day_end),
            bucket_count(DAY_MINUTES),
            "day_p50",
        )
    }
    if long_users:
        kinds["month"] = QueryKind(
            f"{plan.long_days}-day query",
            query_paths(long_users, long_start, day_end),
            bucket_count(DAY_MINUTES * plan.long_days),
            "month_p50",
        )
    if not (year and plan.year_days):
        return kinds
    one = [YEAR_USER]
    span = min(30, plan.year_days)
    kinds["summary_month"] = QueryKind(
        f"summary, {span} days (year user)",
        query_paths(one, QUERY_DAY - timedelta(days=span - 1), day_end, "/summary"),
        summary_minutes(DAY_MINUTES * span),
        "summary_month_p50",
    )
    kinds["summary_day"] = QueryKind(
        "summary, 1 day (year user)",
        query_paths(one, QUERY_DAY, day_end, "/summary"),
        summary_minutes(DAY_MINUTES),
        "summary_day_p50",
    )
    for key, users, who in (("hourly_year", one, "year user"), ("hourly", day_users, "1 Hz users")):
        kinds[key] = QueryKind(
            f"1-day series, interval=1h ({who})",
            query_paths(users, QUERY_DAY, day_end, interval="1h"),
            bucket_count(24),
            "hourly_day_p50",
        )
    # local midnights in Berlin around the year user's UTC days: one bucket per day
    zone = ZoneInfo(BERLIN)
    first = year_first_day(plan).replace(tzinfo=zone)
    last = day_end.replace(tzinfo=zone)
    for metric in ("heart_rate", "steps"):
        route = "/metrics/" + metric.replace("_", "-")
        kinds[f"daily_{metric}"] = QueryKind(
            f"{plan.year_days}-day series, interval=1d, tz={BERLIN} ({metric.replace('_', ' ')})",
            query_paths(one, first, last, route, interval="1d", tz=BERLIN),
            bucket_count(plan.year_days),
            "daily_year_p50",
        )
    return kinds


@dataclass(slots=True)
class Measured:
    """One kind's latencies per run, and /health's measured right before them."""

    kind: QueryKind
    timing: Timing = field(default_factory=Timing)
    health: Timing = field(default_factory=Timing)


@dataclass(slots=True)
class QueryResults:
    kinds: dict[str, Measured] = field(default_factory=dict)
    rss_mb: list[float] = field(default_factory=list)


def measure_queries(server: Server, plan: Plan, kinds: dict[str, QueryKind]) -> QueryResults:
    """Per run and kind: /health (the ceiling), then that kind's queries."""
    res = QueryResults({key: Measured(kind) for key, kind in kinds.items()})
    w, n, budget = plan.warmups, plan.queries, plan.query_budget_s
    for run in range(plan.runs):
        log(f"  query run {run + 1}/{plan.runs}")
        for m in res.kinds.values():
            m.health.add(time_gets(server.port, ["/health"], w, n, None, budget))
            m.timing.add(time_gets(server.port, m.kind.paths, w, n, m.kind.check, budget))
    res.rss_mb = server.peak_rss_mb()
    return res
