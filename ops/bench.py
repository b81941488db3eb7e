"""Reproducible benchmark of the heart-rate service; run it through ``./ops/bench``.

Prints the machine, the exact command and ONE markdown table (each figure the median of
``--runs`` runs, with a same-run ceiling beside it where one applies) and writes the same
text to ``ops/results/bench-<UTC timestamp>.md``. Phases:

1. single-reading POSTs with wrk (64 connections, every request a distinct reading,
   durability ``fsync``), against the service started as ``ops/serve`` does and against
   ``ops/bench_noop.py`` (a FastAPI route that only reads the body) under the same gunicorn
   config; meanwhile a thread measures read-after-write lag on fresh connections;
2. batch POSTs of 1,000 readings with wrk (pre-generated distinct bodies), same two servers;
3. per-minute queries over HTTP against a store loaded through ``service.storage.store``
   (100 users x 2 devices x 1 Hz x 1 day, plus 30 days for a few users), before and after
   ``service.storage.compaction.compact_all`` when that exists.

Every load is bounded in time and goes to 127.0.0.1 only; servers are stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LUA = ROOT / "ops" / "bench_post.lua"
SINGLE_PATH = "/metrics/heart-rate"
PHASES = ("writes", "queries")
BATCH_PATH = "/metrics/heart-rate/batch"
QUERY_DAY = datetime(2024, 1, 15, tzinfo=UTC)  # the day every user of the query store has
WRITE_BASE = datetime(2024, 1, 1, tzinfo=UTC)  # bench_post.lua's first timestamp
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0
MIN_SAMPLES = 10  # measured queries per run and kind, whatever the time budget

TARGETS = {
    "single_rps": 8_000.0,
    "single_p99": 50.0,
    "batch_rps": 1_000_000.0,
    "day_p50": 10.0,
    "month_p50": 60.0,
    "rss": 300.0,
}


# ---------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Plan:
    runs: int
    duration_s: int
    connections: int
    wrk_threads: int
    batch_connections: int
    batch_wide_connections: tuple[int, ...]
    batch_size: int
    batch_bodies: int
    users: int
    long_users: int
    long_days: int
    queries: int
    warmups: int
    query_budget_s: float
    workers: int | None
    keep: bool
    quick: bool
    phases: frozenset[str] = frozenset(PHASES)


def parse_args(argv: Sequence[str]) -> Plan:
    p = argparse.ArgumentParser(
        prog="ops/bench",
        description="Benchmark the service on this machine; prints one markdown table.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run, 3 s, 10 users")
    p.add_argument("--runs", type=int, help="runs per figure, the median is shown (3)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (10; --quick 3)")
    p.add_argument("--connections", type=int, default=64, help="single-POST connections")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--batch-connections", type=int, default=4, help="batch connections (4)")
    p.add_argument(
        "--batch-wide-connections",
        default="16,64",
        help="connection counts of further batch loads, larger client pools, comma-separated "
        "(16,64; 0: none)",
    )
    p.add_argument("--batch-size", type=int, default=1000, help="readings per batch")
    p.add_argument("--batch-bodies", type=int, default=16, help="distinct batch bodies")
    p.add_argument("--users", type=int, help="users in the 1-day store (100; --quick 10)")
    p.add_argument("--long-users", type=int, help="users with --long-days days (5; --quick 1)")
    p.add_argument("--long-days", type=int, default=30, help="days of the long users (30)")
    p.add_argument("--queries", type=int, help="measured queries per run (50; --quick 20)")
    p.add_argument("--warmups", type=int, default=5, help="warm-up queries per run (5)")
    p.add_argument(
        "--query-budget",
        type=float,
        help="seconds per query kind and run; slow queries stop early (45; --quick 15)",
    )
    p.add_argument("--workers", type=int, help="gunicorn workers (default: as ops/serve)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs")
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="which phases to run, comma-separated: writes (single and batch POSTs, lag, "
        "RSS) and/or queries (default: both)",
    )
    a = p.parse_args(argv)
    quick = bool(a.quick)
    try:
        wide = tuple(
            int(x) for x in a.batch_wide_connections.split(",") if x.strip() not in ("", "0")
        )
    except ValueError:
        p.error("--batch-wide-connections takes comma-separated connection counts, e.g. 16,64")
    if any(n < 1 for n in wide):
        p.error("--batch-wide-connections: every count must be at least 1")

    def pick(value: int | None, full: int, smoke: int) -> int:
        return value if value is not None else (smoke if quick else full)

    plan = Plan(
        runs=pick(a.runs, 3, 1),
        duration_s=pick(a.duration, 10, 3),
        connections=a.connections,
        wrk_threads=a.wrk_threads,
        batch_connections=a.batch_connections,
        batch_wide_connections=wide,
        batch_size=a.batch_size,
        batch_bodies=a.batch_bodies,
        users=pick(a.users, 100, 10),
        long_users=pick(a.long_users, 5, 1),
        long_days=a.long_days,
        queries=pick(a.queries, 50, 20),
        warmups=a.warmups,
        query_budget_s=a.query_budget if a.query_budget is not None else (15 if quick else 45),
        workers=a.workers,
        keep=bool(a.keep),
        quick=quick,
        phases=frozenset(x.strip() for x in a.phases.split(",") if x.strip()),
    )
    if not plan.phases or not plan.phases <= set(PHASES):
        p.error(f"--phases takes a comma-separated subset of {', '.join(PHASES)}")
    if plan.runs < 1 or plan.duration_s < 1 or plan.queries < 1 or plan.users < 1:
        p.error("--runs, --duration, --queries and --users must be at least 1")
    if not 0 <= plan.long_users <= plan.users or plan.long_days < 1:
        p.error("--long-users must be within --users and --long-days at least 1")
    if plan.wrk_threads > min(plan.connections, plan.batch_connections):
        p.error("--wrk-threads may not exceed the connection counts")
    return plan


# ---------------------------------------------------------------- small helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# ---------------------------------------------------------------- servers


SERVERS: list[Server] = []  # every server we started, for CpuWatch


class Server:
    """One gunicorn master we started; stopped with SIGTERM to the master."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, workers: int, logs: Path
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.expected_workers = workers
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        SERVERS.append(self)

    def start(self) -> None:
        log(f"starting {self.name}: {shlex.join(self.argv)} (port {self.port})")
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches us, and we stop it in order
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        seen: set[str] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            status, worker = self._health()
            if status == 200:
                seen.add(worker)
                # a worker answers only once its lifespan ran; the service names itself in
                # X-Served-By, so wait (a little) until every worker has answered
                all_seen = len(seen - {""}) >= self.expected_workers
                if len(self.workers()) >= self.expected_workers and (
                    all_seen or "" in seen or time.monotonic() > deadline - READY_TIMEOUT_S / 2
                ):
                    time.sleep(1)
                    return
                continue
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def _health(self) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("x-served-by", "")
        except (OSError, http.client.HTTPException):
            return 0, ""
        finally:
            conn.close()

    def workers(self) -> list[int]:
        if self.proc is None:
            return []
        pid = self.proc.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(x) for x in text.split()]

    def peak_rss_mb(self) -> list[float]:
        """VmHWM (peak resident set) of each live worker, in MB."""
        values = [proc_status_kb(pid, "VmHWM") for pid in self.workers()]
        return [v / 1024 for v in values if v is not None]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        log(f"stopping {self.name} (SIGTERM to master {self.proc.pid})")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in {STOP_TIMEOUT_S:.0f}s; SIGKILL to {self.proc.pid}")
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def server_env(data_dir: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without HR_* and metrics settings: defaults, as on a fresh
    machine; each gunicorn makes its own PROMETHEUS_MULTIPROC_DIR."""
    drop = ("PROMETHEUS_MULTIPROC_DIR", "POLARS_MAX_THREADS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HR_") and k not in drop}
    if data_dir is not None:
        env["HR_DATA_DIR"] = str(data_dir)
    env.update(extra or {})
    return env


def service_server(
    name: str, data_dir: Path, plan: Plan, logs: Path, extra: dict[str, str] | None = None
) -> Server:
    port = free_port()
    argv = ["ops/serve", "--bind", f"127.0.0.1:{port}"]
    if plan.workers:
        argv += ["--workers", str(plan.workers)]
    return Server(name, argv, server_env(data_dir, extra), port, worker_count(plan), logs)


def noop_server(plan: Plan, logs: Path) -> Server:
    port = free_port()
    argv = [".venv/bin/gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    if plan.workers:
        argv += ["--workers", str(plan.workers)]
    argv.append("ops.bench_noop:app")  # positional app overrides the config's wsgi_app
    return Server("noop", argv, server_env(None), port, worker_count(plan), logs)


def worker_count(plan: Plan) -> int:
    """Workers per server: --workers, else gunicorn.conf.py's default (cores, at least 2)."""
    return plan.workers or max(2, os.cpu_count() or 1)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        for s in servers:
            s.start()
        yield
    finally:
        for s in servers:
            s.stop()


# ---------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def ok_per_s(self) -> float:
        return (self.requests - self.non2xx) / self.duration_s


def run_wrk(url: str, connections: int, threads: int, duration_s: int, *args: str) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        *args,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + 60, check=False, cwd=ROOT
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("BENCH_RESULT "))
    # wrk's own summary line, as a cross-check of the Lua figures
    m = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    result = WrkResult(
        requests=int(r["requests"]),
        duration_s=r["duration_us"] / 1e6,
        non2xx=int(r["status"]),
        socket_errors=int(r["connect"] + r["read"] + r["write"] + r["timeout"]),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
    )
    if m and abs(float(m.group(1)) - result.requests / result.duration_s) > 1:
        log(f"note: wrk says {m.group(1)} req/s, the Lua summary {result.ok_per_s:.0f}")
    return result


# ---------------------------------------------------------------- read-after-write probe


@dataclass(slots=True)
class LagProbe:
    """POSTs a unique reading, then GETs it on fresh connections until it shows."""

    port: int
    prefix: str
    interval_s: float = 0.1
    lags_ms: list[float] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)
    cross_worker: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("x-served-by", ""), resp.read()
        finally:
            conn.close()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.interval_s):
            i += 1
            user = f"{self.prefix}-lag{i}"
            ts = WRITE_BASE + timedelta(milliseconds=i)
            body = json.dumps(
                {
                    "user_id": user,
                    "device_id": "device_a",
                    "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "heart_rate": 70,
                }
            ).encode()
            query = urllib.parse.urlencode(
                {"user_id": user, "start": iso(WRITE_BASE), "end": iso(WRITE_BASE.replace(hour=1))}
            )
            try:
                status, writer, _ = self._request("POST", SINGLE_PATH, body)
                if status != 202:
                    self.errors.append(f"POST {status}")
                    continue
                acked = time.perf_counter()
                polls = 0
                while True:
                    polls += 1
                    status, reader, _ = self._request("GET", f"{SINGLE_PATH}?{query}")
                    if status == 200:
                        self.lags_ms.append((time.perf_counter() - acked) * 1000)
                        self.polls.append(polls)
                        self.cross_worker += reader != writer
                        break
                    if status != 404 or time.perf_counter() - acked > 10:
                        self.errors.append(f"GET {status} after {polls} polls")
                        break
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- the query store


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
    from service.catalog import ROW_SCHEMA
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
        module = importlib.import_module("service.storage.compaction")
    except ModuleNotFoundError:
        info.compaction = "no module service.storage.compaction: not compacted"
        return False
    except Exception as exc:  # a half-edited module must not sink the benchmark
        info.compaction = f"service.storage.compaction failed to import ({exc}): not compacted"
        return False
    compact_all: Callable[[Any], object] | None = getattr(module, "compact_all", None)
    if compact_all is None:
        info.compaction = "service.storage.compaction has no compact_all: not compacted"
        return False
    log("compacting the query store with compact_all(store)")
    started = time.perf_counter()
    result = compact_all(store)
    info.compact_s = time.perf_counter() - started
    info.fragments_after = fragment_count(data_dir)
    info.compaction = f"compact_all returned {result!r}"
    return True


# ---------------------------------------------------------------- query timing


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
            path = paths[i % len(paths)]
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
            if not warm:
                samples.append(elapsed)
    finally:
        conn.close()
    return samples


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


# ---------------------------------------------------------------- write phases


@dataclass(slots=True)
class WriteResults:
    single: list[WrkResult] = field(default_factory=list)
    single_noop: list[WrkResult] = field(default_factory=list)
    batch: list[WrkResult] = field(default_factory=list)
    batch_noop: list[WrkResult] = field(default_factory=list)
    # per connection count of the wider batch loads
    batch_wide: dict[int, list[WrkResult]] = field(default_factory=dict)
    batch_wide_noop: dict[int, list[WrkResult]] = field(default_factory=dict)
    lag_ms: list[float] = field(default_factory=list)
    lag_polls: list[int] = field(default_factory=list)
    lag_cross: int = 0
    lag_errors: list[str] = field(default_factory=list)
    rss_single_mb: list[float] = field(default_factory=list)
    rss_batch_mb: list[float] = field(default_factory=list)
    rss_noop_mb: list[float] = field(default_factory=list)
    fragments_end: int | None = None
    wal_left: int | None = None


def write_batch_bodies(directory: Path, prefix: str, plan: Plan) -> list[Path]:
    """Distinct 1,000-reading bodies: every reading of every body is a distinct identity."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for b in range(plan.batch_bodies):
        readings = []
        for j in range(plan.batch_size):
            k = b * plan.batch_size + j
            ts = WRITE_BASE + timedelta(seconds=k // 100)
            readings.append(
                {
                    "user_id": f"{prefix}-u{k % 100}",
                    "device_id": "device_a" if (k // 100) % 2 == 0 else "device_b",
                    "timestamp": iso(ts),
                    "heart_rate": 50 + (k * 7) % 100,
                }
            )
        path = directory / f"{prefix}-{b:03d}.json"
        path.write_text(json.dumps({"readings": readings}, separators=(",", ":")))
        paths.append(path)
    return paths


def check_batch_body(port: int, path: Path, size: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", BATCH_PATH, body=path.read_bytes())
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    if resp.status != 202 or json.loads(answer).get("accepted") != size:
        raise RuntimeError(f"batch body check: {resp.status} {answer[:300]!r}")


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def measure_writes(service: Server, noop: Server, data_dir: Path, plan: Plan) -> WriteResults:
    res = WriteResults()
    stamp = datetime.now(UTC).strftime("%H%M%S")
    for run in range(plan.runs):
        log(f"single POST run {run + 1}/{plan.runs}: no-op ceiling, then the service")
        res.single_noop.append(
            run_wrk(
                url(noop, SINGLE_PATH),
                plan.connections,
                plan.wrk_threads,
                plan.duration_s,
                "single",
                f"n{stamp}r{run}",
            )
        )
        time.sleep(1)
        probe = LagProbe(service.port, f"p{stamp}r{run}")
        probe.start()
        try:
            res.single.append(
                run_wrk(
                    url(service, SINGLE_PATH),
                    plan.connections,
                    plan.wrk_threads,
                    plan.duration_s,
                    "single",
                    f"s{stamp}r{run}",
                )
            )
        finally:
            probe.stop()
        res.lag_ms += probe.lags_ms
        res.lag_polls += probe.polls
        res.lag_cross += probe.cross_worker
        res.lag_errors += probe.errors
        time.sleep(1)
    res.rss_single_mb = service.peak_rss_mb()

    bodies_dir = data_dir.parent / "bodies"
    for run in range(plan.runs):
        log(f"batch POST run {run + 1}/{plan.runs}: no-op ceiling, then the service")
        bodies = write_batch_bodies(bodies_dir, f"b{stamp}r{run}", plan)
        check_batch_body(service.port, bodies[0], plan.batch_size)
        args = ("batch", *map(str, bodies))
        res.batch_noop.append(
            run_wrk(
                url(noop, BATCH_PATH),
                plan.batch_connections,
                plan.wrk_threads,
                plan.duration_s,
                *args,
            )
        )
        time.sleep(1)
        res.batch.append(
            run_wrk(
                url(service, BATCH_PATH),
                plan.batch_connections,
                plan.wrk_threads,
                plan.duration_s,
                *args,
            )
        )
        time.sleep(1)
        for wide in plan.batch_wide_connections:
            bodies = write_batch_bodies(bodies_dir, f"w{wide}s{stamp}r{run}", plan)
            args = ("batch", *map(str, bodies))
            for server, results in ((noop, res.batch_wide_noop), (service, res.batch_wide)):
                results.setdefault(wide, []).append(
                    run_wrk(url(server, BATCH_PATH), wide, plan.wrk_threads, plan.duration_s, *args)
                )
                time.sleep(1)
    res.rss_batch_mb = service.peak_rss_mb()
    res.rss_noop_mb = noop.peak_rss_mb()
    return res


# ---------------------------------------------------------------- machine and report


def machine_lines(data_root: Path) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).splitlines()[0].split(" Copyright")[0]
    return [
        f"- cores: {os.cpu_count()} ({model}); memory: {mem_kb / 1024 / 1024:.1f} GiB; "
        f"kernel {platform.release()}",
        f"- Python {platform.python_version()}, polars {pl.__version__}, {wrk_version}",
        f"- data dirs under {data_root} ({filesystem_of(data_root)}); code at git {git or '?'}",
        f"- load before start: {background_load()}",
    ]


def filesystem_of(path: Path) -> str:
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mount, fstype, *_ = line.split()
        mount = mount.replace("\\040", " ")
        if str(path).startswith(mount) and len(mount) > len(best[0]):
            best = (mount, fstype, dev)
    return f"{best[1]} on {best[2]}"


class CpuWatch:
    """How much CPU processes other than ours used between ``start`` and ``share``.

    Ours: this process, its waited-for children (wrk, stopped servers and, through their
    masters, their workers) and the live servers' masters and workers read from /proc.
    """

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / self._tick
        t = os.times()
        ours = t.user + t.system + t.children_user + t.children_system
        for server in SERVERS:
            if server.proc is not None and server.proc.returncode is None:
                ours += sum(self._proc_cpu(pid) for pid in [server.proc.pid, *server.workers()])
        return time.monotonic(), busy, ours

    def _proc_cpu(self, pid: int) -> float:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = text.rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / self._tick  # utime stime cutime cstime

    def share(self) -> float:
        """Share of all cores (0..1) used by other processes since ``start``."""
        wall0, busy0, ours0 = self._start
        wall1, busy1, ours1 = self._sample()
        cores = os.cpu_count() or 1
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(1e-9, (wall1 - wall0) * cores)


def background_load() -> str:
    """CPU busy share over one second before we start anything, and the load average."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    t0, i0 = sample()
    time.sleep(1)
    t1, i1 = sample()
    busy = 100 * (1 - (i1 - i0) / max(1, t1 - t0))
    load1 = os.getloadavg()[0]
    return f"{busy:.0f}% CPU busy (1 s sample), load average {load1:.2f}"


def fmt_int(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.1f} ms" if x >= 10 else f"{x:.2f} ms"


def fmt_mb(x: float) -> str:
    return f"{x:,.0f} MB"


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value != value:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "yes" if ok else "**no**"


@dataclass(slots=True)
class Table:
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        what: str,
        values: Sequence[float],
        fmt: Callable[[float], str],
        ceiling: Sequence[float] = (),
        target: tuple[str, float, bool] | None = None,
    ) -> None:
        value = median(values)
        ceil = fmt(median(ceiling)) if ceiling else ""
        goal, met = "", ""
        if target is not None:
            goal = target[0]
            met = verdict(value, target[1], target[2])
        runs = ", ".join(fmt(v) for v in values) if len(values) > 1 else ""
        self.rows.append([what, fmt(value), ceil, goal, met, runs])

    def text(self, result: str, extra: str = "", ceiling: str = "", runs: str = "") -> None:
        self.rows.append([result, extra, ceiling, "", "", runs])

    def render(self) -> str:
        head = ["measure", "result (median)", "ceiling (same run)", "target", "met", "runs"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"{n + 1}. {note}" for n, note in enumerate(self.notes)]
        return "\n".join(lines)


def report(
    plan: Plan,
    workers: int,
    writes: WriteResults | None,
    store: StoreInfo | None,
    before: QueryResults | None,
    after: QueryResults | None,
    noise: dict[str, float],
    failures: list[str],
) -> Table:
    t = Table()
    c = plan.connections
    if writes is not None and writes.single:
        s, n = writes.single, writes.single_noop
        t.add(
            f"single POST, fsync, {c} conns: req/s",
            [r.ok_per_s for r in s],
            fmt_int,
            [r.ok_per_s for r in n],
            ("≥ 8,000", TARGETS["single_rps"], True),
        )
        t.add("single POST p50", [r.p50_ms for r in s], fmt_ms, [r.p50_ms for r in n])
        t.add(
            "single POST p99",
            [r.p99_ms for r in s],
            fmt_ms,
            [r.p99_ms for r in n],
            ("≤ 50 ms", TARGETS["single_p99"], False),
        )
    batch_loads = (
        []
        if writes is None
        else [
            (writes.batch, writes.batch_noop, plan.batch_connections),
            *(
                (writes.batch_wide.get(wide, []), writes.batch_wide_noop.get(wide, []), wide)
                for wide in plan.batch_wide_connections
            ),
        ]
    )
    for b, n, conns in batch_loads:
        if not b:
            continue
        size = plan.batch_size
        t.add(
            f"batch POST ({size:,}/request, {conns} conns): readings/s",
            [r.ok_per_s * size for r in b],
            fmt_int,
            [r.ok_per_s * size for r in n],
            ("≥ 1,000,000", TARGETS["batch_rps"], True),
        )
        for name, pick in (("p50", lambda r: r.p50_ms), ("p99", lambda r: r.p99_ms)):
            label = f"batch POST {name} (per request, {conns} conns)"
            t.add(label, [pick(r) for r in b], fmt_ms, [pick(r) for r in n])
    if writes is not None:
        ours = writes.single + writes.batch + [r for rs in writes.batch_wide.values() for r in rs]
        noops = [
            *writes.single_noop,
            *writes.batch_noop,
            *(r for rs in writes.batch_wide_noop.values() for r in rs),
        ]
        bad = sum(r.non2xx for r in ours)
        sock = sum(r.socket_errors for r in ours)
        noop_bad = sum(r.non2xx + r.socket_errors for r in noops)
        t.text("write errors: non-2xx / socket errors", f"{bad:,} / {sock:,}", f"{noop_bad:,}")
    query_counts: list[str] = []
    for label, res in (("before compaction", before), ("", after)):
        if res is None:
            continue
        suffix = f" ({label})" if label else ""
        day_target = None if label else ("≤ 10 ms", TARGETS["day_p50"], False)
        month_target = None if label else ("≤ 60 ms", TARGETS["month_p50"], False)
        t.add(f"1-day query p50{suffix}", res.day.p50, fmt_ms, res.health.p50, day_target)
        t.add(f"1-day query p95{suffix}", res.day.p95, fmt_ms, res.health.p95)
        counts = f"1-day {'/'.join(map(str, res.day.counts))}"
        if res.month.counts:
            counts += f", {plan.long_days}-day {'/'.join(map(str, res.month.counts))}"
        query_counts.append(f"{label or ('after compaction' if before else 'all')}: {counts}")
        if res.month.p50:
            days = plan.long_days
            t.add(
                f"{days}-day query p50{suffix}", res.month.p50, fmt_ms, res.health.p50, month_target
            )
            t.add(f"{days}-day query p95{suffix}", res.month.p95, fmt_ms, res.health.p95)
    if writes is not None and writes.lag_ms:
        lags = writes.lag_ms
        first = sum(1 for p in writes.lag_polls if p == 1)
        t.add("read-after-write lag p50 (under single-POST load)", [median(lags)], fmt_ms)
        t.add("read-after-write lag max", [max(lags)], fmt_ms)
        t.text(
            "read-after-write: first GET already saw it",
            f"{first}/{len(lags)} probes ({writes.lag_cross} read on the other worker)",
        )
    rss_target = ("≤ 300 MB", TARGETS["rss"], False)
    noop_rss = [max(writes.rss_noop_mb)] if writes is not None and writes.rss_noop_mb else []

    def rss(label: str, values: list[float]) -> None:
        if values:
            t.add(label, [max(values)], fmt_mb, noop_rss, rss_target)
            t.rows[-1][5] = ", ".join(fmt_mb(v) for v in values) + " (each worker)"

    if writes is not None:
        rss("peak RSS per worker after single POSTs", writes.rss_single_mb)
        rss("peak RSS per worker after batch POSTs", writes.rss_batch_mb)
    for label, res in (("before compaction", before), ("after compaction", after)):
        if res is not None and res.rss_mb:
            rss(f"peak RSS per worker, query server ({label})", res.rss_mb)
    if writes is not None and writes.fragments_end is not None:
        t.text(
            "fragments in manifest at end of write phase",
            f"{writes.fragments_end:,}",
            runs=f"WAL segments left after SIGTERM: {writes.wal_left}",
        )
    if store is not None:
        after_text = "n/a" if store.fragments_after is None else f"{store.fragments_after:,}"
        t.text(
            "query store fragments: loaded → after compact_all",
            f"{store.fragments_loaded:,} → {after_text}",
            runs=f"{store.rows:,} rows loaded in {store.load_s:.0f} s"
            + (f"; compact_all took {store.compact_s:.0f} s" if store.compact_s else ""),
        )
    if noise:
        t.text(
            "CPU used by other processes meanwhile (noise)",
            ", ".join(f"{phase} {share:.0%}" for phase, share in noise.items()),
            runs="share of all cores; figures above are only comparable when this is ~0%",
        )
    notes(t, plan, workers, writes, store, after is not None and before is not None)
    if query_counts:
        t.notes.append("Measured queries per run: " + "; ".join(query_counts) + ".")
    t.notes += [f"FAILED: {f}" for f in failures]
    return t


def notes(
    t: Table,
    plan: Plan,
    workers: int,
    writes: WriteResults | None,
    store: StoreInfo | None,
    compacted: bool,
) -> None:
    d = plan.duration_s
    t.notes.append(
        f"{plan.runs} run(s) per figure, median shown, every run listed; wrk runs {d} s each "
        f"with {plan.wrk_threads} wrk thread(s) on the same {os.cpu_count()} cores as the "
        f"{workers} gunicorn workers; 'met' compares with targets set for 2 workers on 2 cores."
    )
    t.notes.append(
        "Servers: the service as `ops/serve --bind 127.0.0.1:<free port>` with only "
        "HR_DATA_DIR=<fresh temp dir> set (every other HR_* default: durability fsync); the "
        "ceiling is ops/bench_noop.py (FastAPI, reads the body, answers 202) as "
        "`.venv/bin/gunicorn -c gunicorn.conf.py --bind 127.0.0.1:<port> ops.bench_noop:app`. "
        "Both run at once; each wrk run against the no-op comes right before the one against "
        "the service."
    )
    t.notes.append(
        "Single POST: wrk with ops/bench_post.lua; every request a distinct reading (user, "
        "device_a/device_b, timestamp vary per request; a new user prefix every run); req/s "
        "counts 2xx answers only; latencies are wrk's --latency percentiles."
    )
    t.notes.append(
        f"Batch: wrk with {plan.batch_connections} connections cycling through "
        f"{plan.batch_bodies} pre-generated bodies of {plan.batch_size:,} distinct readings "
        "(fresh bodies every run; one body checked first for accepted == size). wrk was "
        "chosen over a Python thread client: the server, not the client, is the limit, and "
        "wrk uses far less of the 2 shared cores. readings/s = 2xx answers x batch size."
        + (
            f" The {' and '.join(map(str, plan.batch_wide_connections))}-connection loads do "
            "the same with other fresh bodies, right after, in that order: 4 connections "
            "leave a core idle whenever the kernel hands 3 or 4 of them to one worker, and "
            "each waits for its own fsync; with more connections waiting, a group commit "
            "covers more requests (64 is also the single-POST load's count)."
            if plan.batch_wide_connections
            else ""
        )
    )
    if store is not None:
        t.notes.append(
            f"Query store: {plan.users} users x 2 devices x 1 reading/s x 1 day "
            f"({QUERY_DAY:%Y-%m-%d}), plus {plan.long_days} days for the first "
            f"{plan.long_users} users (only they have a {plan.long_days}-day query); loaded with "
            "Store(data_dir, 'bench', 10.0).publish(), one user-day (172,800 rows) per fragment. "
            f"{store.compaction}. Queries: per run and kind up to {plan.warmups} warm-ups, then "
            f"up to {plan.queries} sequential GETs on one keep-alive connection (fewer, but at "
            f"least {MIN_SAMPLES}, once they took {plan.query_budget_s:g} s), cycling through "
            "users; the count of minutes in every answer is checked. Ceiling = GET /health on "
            "the same server. Page cache warm (data just written)."
        )
        if compacted:
            t.notes.append(
                "'before compaction' ran with HR_COMPACT_INTERVAL_S=86400 so that the workers "
                "do not compact in the background during the measurement; the unlabelled "
                "query rows ran after compact_all, with every default."
            )
    if writes is not None:
        t.notes.append(
            "Read-after-write: during each single-POST service run a thread POSTs a unique "
            "reading every 100 ms, then GETs it on fresh connections until it shows; lag = from "
            "the 202 to the end of the first GET that returned it (so at least one GET under "
            "load). Peak RSS = VmHWM of each gunicorn worker (children of the master); ceiling "
            "column = no-op worker. Fragment count from manifest.json after a graceful stop."
        )
        if writes.lag_errors:
            t.notes.append(f"read-after-write probe errors: {writes.lag_errors[:5]}")


# ---------------------------------------------------------------- main


def main(argv: Sequence[str]) -> int:
    plan = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH: run ./ops/bench (it installs wrk as root)", file=sys.stderr)
        return 2
    command = os.environ.get("BENCH_COMMAND") or shlex.join(["ops/bench.py", *argv])
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="hr-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    header = ["## Benchmark", "", *machine_lines(tmp), f"- command: `{command}`", ""]
    print("\n".join(header), flush=True)

    failures: list[str] = []
    writes: WriteResults | None = None
    store: StoreInfo | None = None
    before: QueryResults | None = None
    after: QueryResults | None = None
    service_workers = worker_count(plan)
    noise: dict[str, float] = {}
    try:
        # phases 1, 2, 4: writes against a fresh data dir, next to the no-op ceiling
        if "writes" in plan.phases:
            write_dir = tmp / "write-data"
            try:
                service = service_server("service-write", write_dir, plan, logs)
                noop = noop_server(plan, logs)
                watch = CpuWatch()
                with running(noop, service):
                    writes = measure_writes(service, noop, write_dir, plan)
                noise["write phase"] = watch.share()
                writes.fragments_end = fragment_count(write_dir)
                writes.wal_left = sum(1 for p in (write_dir / "wal").glob("*.log"))
            except Exception as exc:
                failures.append(f"write phase: {exc}")
                log(f"write phase failed: {exc}")

        # phase 3: queries against a store loaded through the storage layer
        if "queries" in plan.phases:
            query_dir = tmp / "query-data"
            try:
                watch = CpuWatch()
                log(f"loading the query store into {query_dir}")
                store, loaded = build_query_store(query_dir, plan)
                has_compaction = _has_compact_all()
                if has_compaction:
                    server = service_server(
                        "service-query-before",
                        query_dir,
                        plan,
                        logs,
                        {"HR_COMPACT_INTERVAL_S": "86400"},
                    )
                    with running(server):
                        log("queries before compaction")
                        before = measure_queries(server, plan)
                if compact_store(query_dir, loaded, store) or not has_compaction:
                    server = service_server("service-query", query_dir, plan, logs)
                    with running(server):
                        log("queries" + (" after compaction" if has_compaction else ""))
                        after = measure_queries(server, plan)
                noise["query phase"] = watch.share()
            except Exception as exc:
                failures.append(f"query phase: {exc}")
                log(f"query phase failed: {exc}")
    finally:
        if not plan.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")

    table = report(plan, service_workers, writes, store, before, after, noise, failures)
    elapsed = time.monotonic() - started
    body = table.render() + f"\n\nTotal time: {elapsed / 60:.1f} min.\n"
    print(body, flush=True)
    results = ROOT / "ops" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    out.write_text("\n".join(header) + "\n" + body)
    log(f"wrote {out.relative_to(ROOT)}")
    return 1 if failures else 0


def _has_compact_all() -> bool:
    try:
        module = importlib.import_module("service.storage.compaction")
    except Exception:
        return False
    return callable(getattr(module, "compact_all", None))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
