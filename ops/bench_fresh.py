"""The fresh-data phase: queries of readings that arrived seconds ago; ``./ops/bench --phases
fresh``, or alone: ``python -m ops.bench_fresh [--runs 3] [--samples 40]``.

Against one service (``ops/serve``'s config, a data dir of its own per run):

1. a 1-day load: one user, two devices, one reading per second each (172,800 readings),
   POSTed in 1,000-reading batches over 4 connections; the first 1-day query starts within
   a second of the last ``202`` and ``--samples`` follow back to back;
2. the same queries again while wrk's single-POST load (64 connections, other users) runs,
   then as many whose range starts a minute later each time (no answer can be reused);
3. a 30-day query of a second user whose first 15 days were compacted before the server
   started (through ``service.storage``) and whose last 15 arrive over HTTP just before.

Every answer is compared bucket by bucket with the readings sent (untimed), so a wrong
answer cannot yield a fast figure. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from ops.bench_common import SINGLE_PATH, iso, log, median, percentile
from ops.bench_plan import Plan, parse_args
from ops.bench_servers import running, service_server
from ops.bench_wrk import run_wrk

DAY_USER = "fresh-day"
MONTH_USER = "fresh-month"
DEVICES = ("phone", "watch")  # no priority list: "phone" (first by id) wins every bucket
FRESH_DAY = datetime(2024, 3, 1, tzinfo=UTC)
MONTH_DAYS = 30
BATCH = 1_000
CONNECTIONS = 4
BATCH_PATH = "/metrics/heart-rate/batch"
TARGETS = {"day_p50": 10.0, "day_p95": 20.0, "month_p50": 60.0}
SAMPLES = 40


def value(device: int, second: pl.Expr) -> pl.Expr:
    """A deterministic heart rate per device and second (integers 45..164)."""
    return 45 + (second * (7 + device) + device * 13) % 120


def readings(user: str, first: datetime, days: int, devices: Sequence[str]) -> pl.DataFrame:
    """One reading per second and device from ``first`` for ``days`` days."""
    n = days * 86_400
    second = pl.int_range(0, n, dtype=pl.Int64)
    start_ms = int(first.timestamp() * 1000)
    frames = [
        pl.select(
            pl.lit(user).alias("user_id"),
            pl.lit(device).alias("device_id"),
            pl.from_epoch(second * 1000 + start_ms, time_unit="ms").alias("ts"),
            value(k, second).cast(pl.Float64).alias("value"),
        )
        for k, device in enumerate(devices)
    ]
    return pl.concat(frames)


def expected(rows: pl.DataFrame) -> list[tuple[str, float]]:
    """Per-minute (timestamp, mean) of the winning device ("phone")."""
    phone = (
        rows.filter(pl.col("device_id") == DEVICES[0]) if rows["device_id"].n_unique() > 1 else rows
    )
    per = phone.group_by(pl.col("ts").dt.truncate("1m")).agg(pl.col("value").mean()).sort("ts")
    return [
        (t.strftime("%Y-%m-%dT%H:%M:%SZ"), v) for t, v in zip(per["ts"], per["value"], strict=True)
    ]


def bodies(rows: pl.DataFrame) -> list[bytes]:
    """1,000-reading batch bodies, each device's readings in time order."""
    docs = rows.select(
        "user_id",
        "device_id",
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
        pl.col("value").cast(pl.Int64).alias("heart_rate"),
    ).to_dicts()
    return [
        json.dumps({"readings": docs[i : i + BATCH]}, separators=(",", ":")).encode()
        for i in range(0, len(docs), BATCH)
    ]


def post_all(port: int, payloads: list[bytes]) -> float:
    """POST every body over CONNECTIONS keep-alive connections; the monotonic time of the
    last ``202``."""
    queue = list(reversed(payloads))
    lock = threading.Lock()
    last = [0.0]
    failures: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                conn.request(
                    "POST", BATCH_PATH, body=body, headers={"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                answer = resp.read()
                done = time.monotonic()
                if resp.status != 202:
                    failures.append(f"{resp.status} {answer[:200]!r}")
                    return
                with lock:
                    last[0] = max(last[0], done)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"batch POST failed: {failures[0]}")
    return last[0]


def series_path(user: str, start: datetime, end: datetime) -> str:
    query = urllib.parse.urlencode({"user_id": user, "start": iso(start), "end": iso(end)})
    return f"{SINGLE_PATH}?{query}"


def timed_queries(port: int, path: str, count: int, want: list[tuple[str, float]]) -> list[float]:
    """``count`` GETs of ``path`` back to back; latencies in ms; each answer checked
    against ``want`` after its timing."""
    return timed_targets(port, [(path, want)] * count)


def naive(moment: datetime) -> datetime:
    """``moment`` (UTC) as the rows' zone-less timestamps hold it."""
    return moment.replace(tzinfo=None)


def moving_targets(rows: pl.DataFrame, count: int) -> list[tuple[str, list[tuple[str, float]]]]:
    """``count`` 1-day ranges ending where the day does, each starting a minute later than
    the one before (no two queries alike), with their expected buckets."""
    end = FRESH_DAY + timedelta(days=1)
    starts = [FRESH_DAY + timedelta(minutes=k + 1) for k in range(count)]
    return [
        (series_path(DAY_USER, start, end), expected(rows.filter(pl.col("ts") >= naive(start))))
        for start in starts
    ]


def timed_targets(port: int, targets: list[tuple[str, list[tuple[str, float]]]]) -> list[float]:
    """GETs of each (path, expected buckets) back to back; latencies in ms; each answer
    checked after its timing."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    samples: list[float] = []
    try:
        for path, want in targets:
            started = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            samples.append((time.perf_counter() - started) * 1000)
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
            check(json.loads(body)["data"], want, path)
    finally:
        conn.close()
    return samples


def check(data: list[dict[str, object]], want: list[tuple[str, float]], path: str) -> None:
    got = [(str(b["timestamp"]), float(b["heart_rate"])) for b in data]  # type: ignore[arg-type]
    if len(got) != len(want):
        raise RuntimeError(f"GET {path}: {len(got)} buckets, expected {len(want)}")
    for (t, v), (wt, wv) in zip(got, want, strict=True):
        if t != wt or abs(v - wv) > 1e-9 * max(1.0, abs(wv)):
            raise RuntimeError(f"GET {path}: bucket {t} = {v}, expected {wt} = {wv}")


@dataclass(slots=True)
class FreshResults:
    day: list[list[float]] = field(default_factory=list)  # per run: latencies, ms
    day_loaded: list[list[float]] = field(default_factory=list)
    day_moving: list[list[float]] = field(default_factory=list)  # loaded, a new range each
    month: list[list[float]] = field(default_factory=list)
    first_delay_ms: list[float] = field(default_factory=list)  # last 202 -> first GET
    load_rate: list[float] = field(default_factory=list)  # readings/s of the 1-day load
    single_rps: list[float] = field(default_factory=list)  # wrk beside the queries


def preload_month(data_dir: Path) -> pl.DataFrame:
    """The month user's first 15 days written and compacted through the storage layer
    before the server starts; returns their rows."""
    from service.schema import ROW_SCHEMA
    from service.storage.compaction import compact_all
    from service.storage.store import Store

    store = Store(data_dir, "bench", 10.0)
    store.ensure_layout()
    first = FRESH_DAY - timedelta(days=MONTH_DAYS - 1)
    old = readings(MONTH_USER, first, MONTH_DAYS // 2, DEVICES[:1])
    seq = pl.int_range(1, old.height + 1, dtype=pl.Int64).alias("seq")
    rows = old.with_columns(seq).select(list(ROW_SCHEMA)).cast(pl.Schema(ROW_SCHEMA))
    for d in range(MONTH_DAYS // 2):
        store.publish({"heart_rate": rows.slice(d * 86_400, 86_400)})
    compact_all(store)
    return old


def one_run(samples: int, logs: Path, plan: Plan) -> FreshResults:
    out = FreshResults()
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp:
        data_dir = Path(tmp) / "data"
        old = preload_month(data_dir)
        day_rows = readings(DAY_USER, FRESH_DAY, 1, DEVICES)
        day_bodies = bodies(day_rows)
        new = readings(MONTH_USER, FRESH_DAY - timedelta(days=MONTH_DAYS // 2 - 1), 15, DEVICES[:1])
        month_bodies = bodies(new)
        day_want = expected(day_rows)
        moving = moving_targets(day_rows, samples)
        month_want = expected(pl.concat([old, new]))
        day_path = series_path(DAY_USER, FRESH_DAY, FRESH_DAY + timedelta(days=1))
        month_first = FRESH_DAY - timedelta(days=MONTH_DAYS - 1)
        month_path = series_path(MONTH_USER, month_first, FRESH_DAY + timedelta(days=1))
        server = service_server("fresh", data_dir, plan, logs)
        with running(server):
            began = time.monotonic()
            last = post_all(server.port, day_bodies)
            out.load_rate.append(day_rows.height / (last - began))
            out.first_delay_ms.append((time.monotonic() - last) * 1000)
            out.day.append(timed_queries(server.port, day_path, samples, day_want))
            load: list[float] = []
            wrk = threading.Thread(
                target=lambda: load.append(
                    run_wrk(f"{server.url}{SINGLE_PATH}", 64, 2, 10, "single", "fresh").ok_per_s
                )
            )
            wrk.start()
            time.sleep(1.0)
            out.day_loaded.append(timed_queries(server.port, day_path, samples, day_want))
            out.day_moving.append(timed_targets(server.port, moving))
            wrk.join()
            out.single_rps.extend(load)
            post_all(server.port, month_bodies)
            out.month.append(timed_queries(server.port, month_path, samples, month_want))
    return out


def table(results: FreshResults) -> str:
    def row(label: str, runs: list[list[float]], target: str | None) -> str:
        p50 = median([percentile(r, 50) for r in runs])
        p95 = median([percentile(r, 95) for r in runs])
        goal = "" if target is None else f"p50 <= {TARGETS[target]:.0f} ms"
        ok = target is not None and p50 <= TARGETS[target]
        if target == "day_p50":  # a day's query has a p95 target too
            goal += f", p95 <= {TARGETS['day_p95']:.0f} ms"
            ok = ok and p95 <= TARGETS["day_p95"]
        met = "" if target is None else ("yes" if ok else "**no**")
        return f"| {label} | {p50:.2f} | {p95:.2f} | {sum(map(len, runs))} | {goal} | {met} |"

    lines = [
        "| fresh-data query | p50 ms | p95 ms | samples | target | met |",
        "|---|---|---|---|---|---|",
        row("1 day, right after a 172,800-reading load", results.day, "day_p50"),
        row("1 day, during single-POST load", results.day_loaded, "day_p50"),
        row("1 day, during that load, each query a new range", results.day_moving, "day_p50"),
        row("30 days, the last 15 fresh", results.month, "month_p50"),
        "",
        f"1-day load: {median(results.load_rate):,.0f} readings/s (4 connections); first query "
        f"{median(results.first_delay_ms):.0f} ms after the last 202; single POSTs beside the "
        f"queries: {median(results.single_rps):,.0f} req/s.",
    ]
    return "\n".join(lines)


def merge(into: FreshResults, run: FreshResults) -> None:
    for name in FreshResults.__slots__:  # type: ignore[attr-defined]
        getattr(into, name).extend(getattr(run, name))


def measure_fresh(plan: Plan, logs: Path, samples: int = SAMPLES) -> str:
    """The phase's own markdown table, medians of ``plan.runs`` runs."""
    results = FreshResults()
    for k in range(plan.runs):
        log(f"fresh-data run {k + 1}/{plan.runs}")
        merge(results, one_run(samples, logs, plan))
    return table(results)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs, each with a fresh server (3)")
    p.add_argument(
        "--samples", type=int, default=SAMPLES, help=f"queries per figure and run ({SAMPLES})"
    )
    args, rest = p.parse_known_args(argv)
    plan = parse_args([*rest, "--runs", str(args.runs)])
    with tempfile.TemporaryDirectory(prefix="bench-fresh-logs-") as logs:
        print(measure_fresh(plan, Path(logs), args.samples))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
