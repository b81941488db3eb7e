"""The write phases: single-reading and batch POSTs with wrk, each right after the same load
against the two ceilings (the no-op FastAPI route and the bare ASGI app), and the
read-after-write lag measured meanwhile."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.bench_common import BATCH_PATH, SINGLE_PATH, WRITE_BASE, iso, log
from ops.bench_plan import Plan
from ops.bench_wrk import WrkResult, check_batch_body, run_wrk, write_batch_bodies
from ops.server import Server


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
            try:
                self._probe(i)
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _probe(self, i: int) -> None:
        user = f"{self.prefix}-lag{i}"
        ts = WRITE_BASE + timedelta(milliseconds=i)
        reading = {
            "user_id": user,
            "device_id": "device_a",
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "heart_rate": 70,
        }
        query = urllib.parse.urlencode(
            {"user_id": user, "start": iso(WRITE_BASE), "end": iso(WRITE_BASE.replace(hour=1))}
        )
        status, writer, _ = self._request("POST", SINGLE_PATH, json.dumps(reading).encode())
        if status != 202:
            self.errors.append(f"POST {status}")
            return
        acked = time.perf_counter()
        polls = 0
        while True:
            polls += 1
            status, reader, _ = self._request("GET", f"{SINGLE_PATH}?{query}")
            if status == 200:
                self.lags_ms.append((time.perf_counter() - acked) * 1000)
                self.polls.append(polls)
                self.cross_worker += reader != writer
                return
            if status != 404 or time.perf_counter() - acked > 10:
                self.errors.append(f"GET {status} after {polls} polls")
                return


@dataclass(slots=True)
class WriteResults:
    single: list[WrkResult] = field(default_factory=list)
    single_noop: list[WrkResult] = field(default_factory=list)
    single_raw: list[WrkResult] = field(default_factory=list)
    batch: list[WrkResult] = field(default_factory=list)
    batch_noop: list[WrkResult] = field(default_factory=list)
    batch_raw: list[WrkResult] = field(default_factory=list)
    # per connection count of the wider batch loads
    batch_wide: dict[int, list[WrkResult]] = field(default_factory=dict)
    batch_wide_noop: dict[int, list[WrkResult]] = field(default_factory=dict)
    batch_wide_raw: dict[int, list[WrkResult]] = field(default_factory=dict)
    lag_ms: list[float] = field(default_factory=list)
    lag_polls: list[int] = field(default_factory=list)
    lag_cross: int = 0
    lag_errors: list[str] = field(default_factory=list)
    rss_single_mb: list[float] = field(default_factory=list)
    rss_batch_mb: list[float] = field(default_factory=list)
    rss_noop_mb: list[float] = field(default_factory=list)
    fragments_end: int | None = None
    wal_left: int | None = None


def measure_writes(
    service: Server, noop: Server, raw: Server, data_dir: Path, plan: Plan
) -> WriteResults:
    res = WriteResults()
    stamp = datetime.now(UTC).strftime("%H%M%S")
    for run in range(plan.runs):
        log(f"single POST run {run + 1}/{plan.runs}: the two ceilings, then the service")
        _single_run(service, noop, raw, plan, f"{stamp}r{run}", res)
    res.rss_single_mb = service.peak_rss_mb()
    for run in range(plan.runs):
        log(f"batch POST run {run + 1}/{plan.runs}: the two ceilings, then the service")
        bodies = data_dir.parent / "bodies"
        _batch_run(service, noop, raw, plan, bodies, f"{stamp}r{run}", res)
    res.rss_batch_mb = service.peak_rss_mb()
    res.rss_noop_mb = noop.peak_rss_mb()
    return res


def _single_run(
    service: Server, noop: Server, raw: Server, plan: Plan, tag: str, res: WriteResults
) -> None:
    def wrk(server: Server, prefix: str) -> WrkResult:
        url = server.url + SINGLE_PATH
        return run_wrk(url, plan.connections, plan.wrk_threads, plan.duration_s, "single", prefix)

    res.single_raw.append(wrk(raw, f"r{tag}"))
    time.sleep(1)
    res.single_noop.append(wrk(noop, f"n{tag}"))
    time.sleep(1)
    probe = LagProbe(service.port, f"p{tag}")
    probe.start()
    try:
        res.single.append(wrk(service, f"s{tag}"))
    finally:
        probe.stop()
    res.lag_ms += probe.lags_ms
    res.lag_polls += probe.polls
    res.lag_cross += probe.cross_worker
    res.lag_errors += probe.errors
    time.sleep(1)


def _batch_run(
    service: Server,
    noop: Server,
    raw: Server,
    plan: Plan,
    bodies_dir: Path,
    tag: str,
    res: WriteResults,
) -> None:
    def wrk(server: Server, connections: int, bodies: list[Path]) -> WrkResult:
        args = ("batch", *map(str, bodies))
        url = server.url + BATCH_PATH
        return run_wrk(url, connections, plan.wrk_threads, plan.duration_s, *args)

    bodies = write_batch_bodies(bodies_dir, f"b{tag}", plan)
    check_batch_body(service.port, bodies[0], plan.batch_size)
    res.batch_raw.append(wrk(raw, plan.batch_connections, bodies))
    time.sleep(1)
    res.batch_noop.append(wrk(noop, plan.batch_connections, bodies))
    time.sleep(1)
    res.batch.append(wrk(service, plan.batch_connections, bodies))
    time.sleep(1)
    for wide in plan.batch_wide_connections:
        bodies = write_batch_bodies(bodies_dir, f"w{wide}s{tag}", plan)
        loads = ((raw, res.batch_wide_raw), (noop, res.batch_wide_noop), (service, res.batch_wide))
        for server, results in loads:
            results.setdefault(wide, []).append(wrk(server, wide, bodies))
            time.sleep(1)
