"""Memory under sustained mixed load; run it through ``./ops/soak`` (default 600 s).

Starts the service under ``gunicorn.conf.py`` (what ``ops/serve`` runs, here with this
Python) against a temporary data dir and keeps, all at once for the whole duration:

- single POSTs (wrk, ``ops/soak.lua single``): heart rate, steps, calories and one-record
  ``/readings`` in turn;
- batch POSTs (wrk, ``ops/soak.lua batch``): 1,000 records a request to the three batch
  routes and ``/readings`` in turn (every reading of both loads a distinct identity);
- ``--query-threads`` query loops (``ops/soak_clients.Queries``): series at 1s to 1d, in UTC
  and Berlin, ``/summary`` and ``/users`` over the hour and day being written;
- ``--streams`` event streams on the written users, opened again when dropped.

The server runs with its defaults (``--set HR_NAME=VALUE`` changes one, to compare).

Every ``--every`` seconds it prints each worker's resident memory (VmRSS) and peak (VmHWM),
the manifest's fragments and the open streams; at the end each load's requests, the writes
the service answered other than 2xx and what it logged as warnings or errors (from its
log), the peak per worker and PASS or FAIL against 300 MB (exit status 1 on FAIL). Traffic goes to
127.0.0.1 only and stops by itself; the server is stopped with SIGTERM and the temporary
directory removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from ops.bench_common import TARGETS
from ops.bench_servers import running, server_env
from ops.bench_wrk import WrkResult, run_wrk
from ops.server import ROOT, Server, free_port, gunicorn_argv, proc_status_kb
from ops.soak_clients import Queries, Streams, stream_topics

LUA = ROOT / "ops" / "soak.lua"
# readings per request in soak.lua's cycle of four routes (/readings: three per record)
READINGS_PER_REQUEST = {"single": 6 / 4, "batch": 6_000 / 4}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ops/soak", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=600, help="seconds of load (600)")
    p.add_argument("--every", type=int, default=15, help="seconds between samples (15)")
    p.add_argument("--single-connections", type=int, default=32, help="(32; 0: none)")
    p.add_argument("--batch-connections", type=int, default=4, help="(4; 0: none)")
    p.add_argument("--query-threads", type=int, default=2, help="query loops (2; 0: none)")
    p.add_argument("--streams", type=int, default=100, help="open event streams (100)")
    p.add_argument("--workers", type=int, help="gunicorn workers (default: as ops/serve)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="HR_NAME=VALUE",
        help="a setting for the server instead of its default (repeatable)",
    )
    a = p.parse_args(argv)
    if a.duration < 1 or a.every < 1:
        p.error("--duration and --every must be at least 1")
    if any(not item.startswith("HR_") or "=" not in item for item in a.set):
        p.error("--set takes HR_NAME=VALUE")
    return a


def soak_server(root: Path, workers: int, settings: dict[str, str]) -> Server:
    port = free_port()
    argv = gunicorn_argv(port, workers)
    env = server_env(root / "data", settings)
    return Server(argv, env, port, workers, root / "service.log", root / "data", "service-soak")


def main(argv: list[str]) -> int:
    args = parse(argv)
    workers = args.workers or max(2, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="hr-soak-") as tmp:
        settings = dict(item.split("=", 1) for item in args.set)
        server = soak_server(Path(tmp), workers, settings)
        results: dict[str, WrkResult | str] = {}

        def load(name: str, connections: int) -> None:
            try:
                prefix = f"soak-{name[0]}"
                results[name] = run_wrk(
                    server.url, connections, 1, args.duration, name, prefix, script=LUA
                )
            except (RuntimeError, OSError) as exc:
                results[name] = f"failed: {exc}"

        with running(server):
            streams = Streams(server.port, stream_topics(args.streams))
            streams.start()
            queries = [Queries(server.port) for _ in range(args.query_threads)]
            for i, q in enumerate(queries):
                q.start(f"queries-{i}")
            wanted = (("single", args.single_connections), ("batch", args.batch_connections))
            loads = [threading.Thread(target=load, args=a) for a in wanted if a[1] > 0]
            for t in loads:
                t.start()
            watch = Watch(server, Path(tmp) / "data", streams)
            started = time.monotonic()
            watch.table(loads, args.every)
            for t in loads:
                t.join()
            elapsed = time.monotonic() - started
            for q in queries:
                q.stop()
            streams.stop()
            watch.sample(elapsed)  # the last word on each worker's peak
        print()
        report(results, queries, streams, elapsed)
        report_problems(*problems(Path(tmp) / "service.log"))
        return watch.verdict(workers)


class Watch:
    """Samples of each worker's memory, kept per pid (a replaced worker keeps its peak)."""

    def __init__(self, server: Server, data: Path, streams: Streams) -> None:
        self.server = server
        self.data = data
        self.streams = streams
        self.hwm_kb: dict[int, int] = {}
        self.rss_kb: dict[int, int] = {}
        self.compactor: list[float] = []

    def table(self, loads: list[threading.Thread], every: int) -> None:
        print(
            "| seconds | RSS per worker (MB) | peak per worker (MB) | compaction process peak"
            " (MB) | fragments | streams open | stream events |"
        )
        print("|---|---|---|---|---|---|---|")
        started = time.monotonic()
        due = started + every
        while any(t.is_alive() for t in loads):
            time.sleep(max(0.0, min(1.0, due - time.monotonic())))
            if time.monotonic() >= due:
                self.sample(time.monotonic() - started)
                due += every

    def sample(self, seconds: float) -> None:
        rss, hwm = [], []
        for pid in self.server.worker_pids():
            now, peak = proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM")
            if now is None or peak is None:
                continue
            self.rss_kb[pid] = max(self.rss_kb.get(pid, 0), now)
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), peak)
            rss.append(f"{now / 1024:.0f}")
            hwm.append(f"{peak / 1024:.0f}")
        child = compactor_peak_mb(self.server)
        self.compactor += [child] if child else []
        print(
            f"| {seconds:.0f} | {', '.join(rss)} | {', '.join(hwm)} "
            f"| {f'{child:.0f}' if child else '-'} | {fragments(self.data)} "
            f"| {self.streams.open_now} | {self.streams.events:,} |"
        )
        sys.stdout.flush()

    def verdict(self, workers: int) -> int:
        limit = TARGETS["rss"]
        peaks = {pid: kb / 1024 for pid, kb in self.hwm_kb.items()}
        listed = ", ".join(f"{mb:.0f} MB (pid {pid})" for pid, mb in peaks.items())
        print(f"peak RSS (VmHWM) per worker: {listed}")
        sampled = ", ".join(f"{kb / 1024:.0f} MB" for kb in self.rss_kb.values())
        print(f"highest sampled RSS (VmRSS) per worker: {sampled}")
        if len(peaks) > workers:
            print(f"note: {len(peaks)} worker pids for {workers} workers: a worker was replaced")
        if self.compactor:
            print(f"compaction process, a pass's peak RSS: max {max(self.compactor):.0f} MB")
        worst = max(peaks.values(), default=float("nan"))
        ok = bool(peaks) and worst <= limit
        print(
            f"{'PASS' if ok else 'FAIL'}: highest worker peak {worst:.0f} MB, limit {limit:.0f} MB"
        )
        return 0 if ok else 1


def report(
    results: dict[str, WrkResult | str], queries: list[Queries], streams: Streams, elapsed: float
) -> None:
    print(f"duration {elapsed:.0f} s")
    print("| load | requests | req/s | readings | non-2xx | socket errors | p50 | p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"| {name} | {r} | | | | | | |")
            continue
        readings = r.requests * READINGS_PER_REQUEST[name]
        print(
            f"| {name} | {r.requests:,} | {r.ok_per_s:,.0f} | {readings:,.0f} | {r.non2xx} "
            f"| {r.socket_errors} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms |"
        )
    counts: Counter[str] = Counter()
    for q in queries:
        counts.update(q.counts)
    for kind, n in sorted(counts.items()):
        print(f"| query {kind} | {n:,} | | | | | | |")
    print(
        f"streams: {len(streams.topics)} wanted, {streams.opened} opened (first opens and"
        f" reopens), {streams.reconnects} dropped and reopened, {streams.refused} refused,"
        f" {streams.events:,} events"
    )


def problems(log: Path) -> tuple[Counter[str], Counter[str]]:
    """From the service's JSON log: its answers other than 2xx to writes, by status and
    route, and its warnings and errors, by logger and message (numbers masked), so that a
    run's refused writes say what they were before the log goes with the data directory."""
    answers: Counter[str] = Counter()
    logged: Counter[str] = Counter()
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            # most lines are 2xx access lines: skipped before parsing
            if '"status":2' in line or not ('"status":' in line or '"level":"' in line):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            status = entry.get("status") if isinstance(entry, dict) else None
            if isinstance(status, int):
                if entry.get("method") == "POST" and status >= 300:
                    answers[f"{status} POST {entry.get('route') or entry.get('path')}"] += 1
            elif isinstance(entry, dict) and entry.get("level") in ("warning", "error"):
                message = re.sub(r"\d+", "N", str(entry.get("message", "")))[:100]
                logged[f"{entry['level']} {entry.get('logger')}: {message}"] += 1
    return answers, logged


def report_problems(answers: Counter[str], logged: Counter[str]) -> None:
    for what, n in sorted(answers.items()):
        print(f"writes answered {what}: {n:,}")
    for what, n in logged.most_common(10):
        print(f"logged {n:,} times: {what}")


def compactor_peak_mb(server: Server) -> float | None:
    """``hr_compaction_peak_rss_bytes`` from ``/metrics``, in MB (None before a pass)."""
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("hr_compaction_peak_rss_bytes "):
            value = float(line.split()[1])
            return value / 2**20 if value else None
    return None


def fragments(data: Path) -> int:
    try:
        return len(json.loads((data / "manifest.json").read_bytes())["fragments"])
    except (OSError, ValueError, KeyError):
        return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
