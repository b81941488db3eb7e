"""Load generator and end-to-end check for the heart-rate service, standard library only: run
``python ops/generate_data.py --count 10000 --duration 120`` (or ``--batch 100 --duration 0``,
``--url http://127.0.0.1:8123``, ``--scope timestamp`` ...) to send ``--count`` readings (exact
duplicates included) from ``--users`` x ``--devices-per-user`` concurrent devices, about one
reading per second per device with timestamps in a window ending now, some out of order, some
in bursts, with mixed timestamp formats and int or float heart rates, paced to take about
``--duration`` seconds; then every user's series is fetched and compared with
``reference.expected_series`` over the acknowledged readings. User ids carry a per-run tag so
runs against the same server do not interfere. Exit code 0 when everything matched and no
request ended in a 5xx or connection error, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).parent))

from reference import Reading, expected_series

PATH = "/metrics/heart-rate"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
MAX_RETRIES = 5
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Item:
    at: float  # seconds after the start at which it is due
    body: dict[str, object]
    reading: Reading


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # final status per request, 0 = none
    latencies: list[float] = field(default_factory=list)
    acked: list[Reading] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        with self.lock:
            if len(self.problems) < 5:
                self.problems.append(problem)


def iso(ts_ms: int, with_ms: bool = False, offset_h: int = 0) -> str:
    text = (EPOCH + timedelta(milliseconds=ts_ms, hours=offset_h)).strftime("%Y-%m-%dT%H:%M:%S")
    if with_ms:
        text += f".{ts_ms % 1000:03d}"
    return text + (f"+{offset_h:02d}:00" if offset_h else "Z")


def device_name(index: int) -> str:
    return f"device_{chr(ord('a') + index)}" if index < 26 else f"device_{index}"


def make_pair(
    rng: random.Random, user: str, device: str, n: int, end_s: int, args: argparse.Namespace
) -> list[Item]:
    """One device's sends: unique seconds ending at ``end_s``, duplicates, disorder, bursts."""
    dup = [j > 0 and rng.random() < args.duplicate_rate for j in range(n)]
    first_s = end_s - dup.count(False)
    keyed: list[tuple[float, dict[str, object], Reading]] = []
    originals: list[tuple[dict[str, object], Reading]] = []
    for j in range(n):
        if dup[j]:
            keyed.append((j + rng.uniform(0.1, 3.0), *rng.choice(originals[-20:])))
            continue
        ts_ms, kind = (first_s + len(originals)) * 1000, rng.random()
        with_ms = kind >= 0.4  # 40% whole seconds: devices of one user then share instants
        ts_ms += rng.randrange(1000) if with_ms else 0
        raw = min(200.0, max(40.0, rng.gauss(75, 18)))
        value: float = round(raw, 1) if rng.random() < 0.5 else round(raw)
        text = iso(ts_ms, with_ms, 2 if rng.random() < 0.2 else 0)
        body: dict[str, object] = {
            "user_id": user,
            "device_id": device,
            "timestamp": text,
            "heart_rate": value,
        }
        originals.append((body, (user, device, ts_ms, float(value))))
        shift = rng.uniform(-4, 4) if rng.random() < args.disorder_rate else 0.0
        keyed.append((j + shift, *originals[-1]))
    keyed.sort(key=lambda k: k[0])
    items: list[Item] = []
    burst_left, burst_at = 0, 0.0
    for j, (_, body, reading) in enumerate(keyed):
        at = args.duration * j / n
        if burst_left == 0 and rng.random() < args.burst_rate:
            burst_left, burst_at = rng.randint(10, 50), at
        if burst_left:
            burst_left, at = burst_left - 1, burst_at
        items.append(Item(at, body, reading))
    return items


class Sender:
    """One thread's keep-alive connection, with retries on 503 and connection errors."""

    def __init__(self, host: str, port: int, stats: Stats) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.stats = stats
        self.last_used = time.monotonic()

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes] | None:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(MAX_RETRIES + 1):
            if attempt:
                with self.stats.lock:
                    self.stats.retries += 1
            if time.monotonic() - self.last_used > 4:  # the server drops idle keep-alives
                self.conn.close()
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=data, headers=HEADERS)
                response = self.conn.getresponse()
                payload = response.read()
                latency = time.perf_counter() - t0
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                self.stats.note(f"{method} {path}: {type(exc).__name__}: {exc}")
                time.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            finally:
                self.last_used = time.monotonic()
            with self.stats.lock:
                self.stats.latencies.append(latency)
            if response.status == 503 and attempt < MAX_RETRIES:
                after = response.getheader("Retry-After", "1")
                time.sleep(min(float(after), 30.0) if after.isdigit() else 1.0)
                continue
            return response.status, payload
        return None

    def send(self, items: list[Item], batch: bool) -> None:
        body: object = {"readings": [i.body for i in items]} if batch else items[0].body
        result = self.request("POST", PATH + "/batch" if batch else PATH, body)
        status, payload = result if result is not None else (0, b"")
        good: list[Reading] = []
        if status == 202:
            bad = {e["index"] for e in json.loads(payload).get("errors", [])} if batch else set()
            good = [item.reading for n, item in enumerate(items) if n not in bad]
        if status != 202 or len(good) < len(items):
            self.stats.note(f"POST {status}: {payload[:300]!r}")
        with self.stats.lock:
            self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
            self.stats.sent += len(items)
            self.stats.accepted += len(good)
            self.stats.acked.extend(good)
            if status == 202 or 400 <= status < 500:
                self.stats.rejected += len(items) - len(good)
            else:
                self.stats.errors += len(items)


def run_thread(sender: Sender, items: list[Item], batch: int, t0: float) -> None:
    groups = (
        [items[i : i + batch] for i in range(0, len(items), batch)]
        if batch
        else [[item] for item in items]
    )
    for group in groups:
        delay = t0 + group[-1].at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sender.send(group, bool(batch))


def verify(sender: Sender, acked: list[Reading], args: argparse.Namespace) -> list[str]:
    priority = {
        name.strip(): int(rank)
        for name, _, rank in (p.rpartition(":") for p in args.priority.split(",") if p.strip())
    }
    by_user: dict[str, list[Reading]] = {}
    for reading in acked:
        by_user.setdefault(reading[0], []).append(reading)
    mismatches: list[str] = []
    buckets = 0
    for user, readings in sorted(by_user.items()):
        lo, hi = min(r[2] for r in readings), max(r[2] for r in readings)
        start_ms, end_ms = lo - lo % 60_000, hi - hi % 60_000 + 60_000
        expected = expected_series(readings, user, start_ms, end_ms, priority, args.scope)
        query = urlencode({"user_id": user, "start": iso(start_ms), "end": iso(end_ms)})
        result = sender.request("GET", f"{PATH}?{query}")
        status, payload = result if result is not None else (0, b"")
        if status not in (200, 404):
            mismatches.append(f"{user}: GET answered {status}: {payload[:200]!r}")
            continue
        doc: dict[str, Any] = json.loads(payload) if status == 200 else {"data": [], "count": 0}
        actual = [(d["timestamp"], d["heart_rate"], d["device_id"]) for d in doc["data"]]
        buckets += len(expected)
        if doc["count"] != len(actual) or len(actual) != len(expected):
            mismatches.append(
                f"{user}: {len(actual)} buckets (count {doc['count']}), expected {len(expected)}"
            )
        for got, want in zip(actual, expected, strict=False):
            if got[0] != want[0] or got[2] != want[2] or abs(got[1] - want[1]) > 1e-9:
                mismatches.append(f"{user}: got {got}, expected {want}")
                break
    if not mismatches:
        print(f"verify: {len(by_user)} users, {buckets} buckets, all match")
    return mismatches


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--count", type=int, default=10_000, help="readings sent, duplicates included")
    p.add_argument("--duration", type=float, default=120.0, help="seconds; 0 = no pacing")
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--devices-per-user", type=int, default=2)
    p.add_argument("--batch", type=int, default=0, help="readings per batch; 0 = single POSTs")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--duplicate-rate", type=float, default=0.05)
    p.add_argument("--disorder-rate", type=float, default=0.1, help="readings sent out of order")
    p.add_argument("--burst-rate", type=float, default=0.005, help="chance a burst starts")
    p.add_argument("--concurrency", type=int, default=0, help="threads; 0 = one per device")
    p.add_argument("--priority", default="device_a:1,device_b:2")
    p.add_argument("--scope", choices=("bucket", "timestamp"), default="bucket")
    p.add_argument("--user-prefix", default=None, help="default: user_<run tag>_")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    prefix = args.user_prefix or f"user_{int(time.time() * 1000) % 10**9:09d}_"
    pairs = [
        (f"{prefix}{u:03d}", device_name(d))
        for u in range(args.users)
        for d in range(args.devices_per_user)
    ]
    end_s = int(time.time())
    threads_n = min(args.concurrency or len(pairs), len(pairs))
    plans: list[list[Item]] = [[] for _ in range(threads_n)]
    for n, (user, device) in enumerate(pairs):
        share = args.count // len(pairs) + (n < args.count % len(pairs))
        plans[n % threads_n].extend(make_pair(rng, user, device, share, end_s, args))
    for plan in plans:
        plan.sort(key=lambda item: item.at)
    print(
        f"sending {args.count} readings from {len(pairs)} devices ({args.users} users) "
        f"over {threads_n} threads to {args.url}, batch {args.batch}, seed {seed}",
        flush=True,
    )
    stats, done, t0 = Stats(), threading.Event(), time.monotonic()

    def progress() -> None:
        while not done.wait(5.0):
            elapsed = time.monotonic() - t0
            print(
                f"progress: sent {stats.sent}, accepted {stats.accepted}, "
                f"{stats.sent / elapsed:.0f}/s",
                flush=True,
            )

    threads = [
        threading.Thread(target=run_thread, args=(Sender(host, port, stats), plan, args.batch, t0))
        for plan in plans
    ]
    monitor = threading.Thread(target=progress, daemon=True)
    for thread in [*threads, monitor]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    elapsed = time.monotonic() - t0
    lat = sorted(stats.latencies) or [0.0]
    p50, p99 = (lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 for q in (0.5, 0.99))
    print(
        f"summary: sent {stats.sent}, accepted {stats.accepted}, rejected {stats.rejected}, "
        f"errors {stats.errors}, retries {stats.retries}, elapsed {elapsed:.1f}s, "
        f"rate {stats.sent / max(elapsed, 1e-9):.0f}/s, "
        f"latency p50 {p50:.1f}ms p99 {p99:.1f}ms ({len(stats.latencies)} requests)"
    )
    print(f"  responses by status: {dict(sorted(stats.statuses.items()))}")
    for problem in stats.problems:
        print(f"  problem: {problem}")
    mismatches = verify(Sender(host, port, stats), stats.acked, args)
    for mismatch in mismatches[:10]:
        print(f"verify mismatch: {mismatch}")
    if mismatches:
        print(f"verify: {len(mismatches)} users with mismatches")
    return 0 if not mismatches and stats.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
