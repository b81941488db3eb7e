"""Load generator and end-to-end check for the metrics service, standard library only: run
``python ops/generate_data.py --count 10000 --duration 120`` (or ``--batch 100 --duration 0``,
``--url http://127.0.0.1:8123``, ``--scope timestamp`` ...) to send ``--count`` records (exact
duplicates included) from ``--users`` x ``--devices-per-user`` concurrent devices, about one
record per second per device with timestamps in a window ending now, some out of order, some
in bursts, with mixed timestamp formats. A record carries a heart rate, steps, calories or
several of them; a share of the sends (``--mixed-rate``) goes as whole records to
``POST /readings``, the rest as readings of one metric to ``/metrics/<metric>[/batch]``. All
is paced to take about ``--duration`` seconds; then every user's series of every metric is
fetched at each of ``--intervals`` in ``--tz`` with min, max and count, and its summary, and
compared with ``reference.py`` over the acknowledged readings. User ids carry a per-run tag
so runs against the same server do not interfere. Exit code 0 when everything matched and no
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
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))

from reference import Reading
from verification import verify

PATHS = {
    "heart_rate": "/metrics/heart-rate",
    "steps": "/metrics/steps",
    "calories": "/metrics/calories",
}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
MAX_RETRIES = 5
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Acked = tuple[str, Reading]  # (metric, reading)


@dataclass(frozen=True, slots=True)
class Item:
    at: float  # seconds after the start at which it is due
    record: dict[str, object]  # user_id, device_id, timestamp and one field per metric
    readings: tuple[Acked, ...]  # one per metric field of the record


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0  # readings: a record of three metrics counts three
    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # final status per request, 0 = none
    latencies: list[float] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
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


def values(rng: random.Random) -> dict[str, float]:
    """One record's metrics: mostly a heart rate, often steps or calories too."""
    out: dict[str, float] = {}
    if rng.random() < 0.8:
        raw = min(200.0, max(40.0, rng.gauss(75, 18)))
        out["heart_rate"] = round(raw, 1) if rng.random() < 0.5 else round(raw)
    if rng.random() < 0.4:  # an integer, sometimes written as a float with no fraction
        out["steps"] = rng.randint(0, 4) * (1.0 if rng.random() < 0.3 else 1)
    if rng.random() < 0.3:
        out["calories"] = round(rng.uniform(0, 0.3), 3)
    return out or {"heart_rate": 70}


def make_pair(
    rng: random.Random, user: str, device: str, n: int, end_s: int, args: argparse.Namespace
) -> list[Item]:
    """One device's sends: unique seconds ending at ``end_s``, duplicates, disorder, bursts."""
    dup = [j > 0 and rng.random() < args.duplicate_rate for j in range(n)]
    first_s = end_s - dup.count(False)
    keyed: list[tuple[float, dict[str, object], tuple[Acked, ...]]] = []
    originals: list[tuple[dict[str, object], tuple[Acked, ...]]] = []
    for j in range(n):
        if dup[j]:
            keyed.append((j + rng.uniform(0.1, 3.0), *rng.choice(originals[-20:])))
            continue
        ts_ms, kind = (first_s + len(originals)) * 1000, rng.random()
        with_ms = kind >= 0.4  # 40% whole seconds: devices of one user then share instants
        ts_ms += rng.randrange(1000) if with_ms else 0
        text = iso(ts_ms, with_ms, 2 if rng.random() < 0.2 else 0)
        metrics = values(rng)
        record = {"user_id": user, "device_id": device, "timestamp": text, **metrics}
        readings = tuple((m, (user, device, ts_ms, float(v))) for m, v in metrics.items())
        originals.append((record, readings))
        shift = rng.uniform(-4, 4) if rng.random() < args.disorder_rate else 0.0
        keyed.append((j + shift, *originals[-1]))
    keyed.sort(key=lambda k: k[0])
    items: list[Item] = []
    burst_left, burst_at = 0, 0.0
    for j, (_, record, readings) in enumerate(keyed):
        at = args.duration * j / n
        if burst_left == 0 and rng.random() < args.burst_rate:
            burst_left, burst_at = rng.randint(10, 50), at
        if burst_left:
            burst_left, at = burst_left - 1, burst_at
        items.append(Item(at, record, readings))
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

    def send(self, items: list[Item], batch: bool, mixed: bool) -> None:
        """Whole records to ``/readings``, or each metric's readings to its own route."""
        if mixed:
            records = [item.record for item in items]
            # both shapes the route takes: an object with "readings", or a bare array
            body: object = {"readings": records} if len(records) % 2 else records
            self.post("/readings", body, [list(item.readings) for item in items])
            return
        for metric, path in PATHS.items():
            chosen = [(i.record, r) for i in items for r in i.readings if r[0] == metric]
            readings = [
                {k: v for k, v in record.items() if k not in PATHS or k == metric}
                for record, _ in chosen
            ]
            if batch and readings:
                self.post(path + "/batch", {"readings": readings}, [[r] for _, r in chosen])
            elif readings:
                for reading, (_, acked) in zip(readings, chosen, strict=True):
                    self.post(path, reading, [[acked]], single=True)

    def post(
        self, path: str, body: object, readings: list[list[Acked]], single: bool = False
    ) -> None:
        """POST ``body`` whose n-th element holds ``readings[n]``; note what was acked."""
        result = self.request("POST", path, body)
        status, payload = result if result is not None else (0, b"")
        answer = json.loads(payload) if status == 202 else {}
        bad = {e["index"] for e in answer.get("errors", [])} if not single else set()
        good = [r for n, rs in enumerate(readings) if n not in bad for r in rs]
        total = sum(len(rs) for rs in readings)
        if status != 202 or len(good) < total:
            self.stats.note(f"POST {path} {status}: {payload[:300]!r}")
        if "by_metric" in answer:
            counted = {m: sum(1 for g in good if g[0] == m) for m in PATHS}
            if answer["by_metric"] != counted:
                self.stats.note(f"POST {path}: by_metric {answer['by_metric']}, sent {counted}")
        with self.stats.lock:
            self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
            self.stats.sent += total
            self.stats.accepted += len(good)
            self.stats.acked.extend(good)
            if status == 202 or 400 <= status < 500:
                self.stats.rejected += total - len(good)
            else:
                self.stats.errors += total


def run_thread(
    sender: Sender, items: list[Item], args: argparse.Namespace, t0: float, seed: str
) -> None:
    rng = random.Random(seed)
    batch = args.batch
    groups = (
        [items[i : i + batch] for i in range(0, len(items), batch)]
        if batch
        else [[item] for item in items]
    )
    for group in groups:
        delay = t0 + group[-1].at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sender.send(group, bool(batch), rng.random() < args.mixed_rate)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--count", type=int, default=10_000, help="records sent, duplicates included")
    p.add_argument("--duration", type=float, default=120.0, help="seconds; 0 = no pacing")
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--devices-per-user", type=int, default=2)
    p.add_argument("--batch", type=int, default=0, help="records per batch; 0 = single POSTs")
    p.add_argument("--mixed-rate", type=float, default=0.3, help="sends to POST /readings")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--duplicate-rate", type=float, default=0.05)
    p.add_argument("--disorder-rate", type=float, default=0.1, help="readings sent out of order")
    p.add_argument("--burst-rate", type=float, default=0.005, help="chance a burst starts")
    p.add_argument("--concurrency", type=int, default=0, help="threads; 0 = one per device")
    p.add_argument("--priority", default="device_a:1,device_b:2")
    p.add_argument("--scope", choices=("bucket", "timestamp"), default="bucket")
    p.add_argument("--intervals", default="1m,1h", help="series checked at each of these")
    p.add_argument("--tz", default="Europe/Berlin", help="zone of the series and summary checked")
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
        f"sending {args.count} records from {len(pairs)} devices ({args.users} users) "
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
        threading.Thread(
            target=run_thread, args=(Sender(host, port, stats), plan, args, t0, f"{seed}-{n}")
        )
        for n, plan in enumerate(plans)
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
    checker = Sender(host, port, stats)
    priority = {
        name.strip(): int(rank)
        for name, _, rank in (p.rpartition(":") for p in args.priority.split(",") if p.strip())
    }
    mismatches = verify(
        lambda path: checker.request("GET", path),
        stats.acked,
        priority,
        args.scope,
        [i.strip() for i in args.intervals.split(",") if i.strip()],
        args.tz,
    )
    for mismatch in mismatches[:10]:
        print(f"verify mismatch: {mismatch}")
    if mismatches:
        print(f"verify: {len(mismatches)} answers with mismatches")
    return 0 if not mismatches and stats.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
