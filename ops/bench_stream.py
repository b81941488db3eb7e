"""Event-stream lag and ingestion beside open streams; ``./ops/bench --phases streams``, or
alone: ``python -m ops.bench_stream [--streams 200] [--duration 10] [--runs 3]``.

Against one service (``ops/serve``'s config, a fresh data dir), each run has two halves,
each ``--duration`` seconds of wrk's single-POST load (bench_post.lua, 64 connections, its
own users) plus a probe that POSTs a reading every ``PROBE_INTERVAL_S`` for one of the
streamed users, through a keep-alive connection held by the worker that does NOT hold
that user's stream:

1. no streams open: the single-POST rate without streams;
2. ``--streams`` streams open, one per distinct user (``live-000`` ...; wrk never writes
   them, so a stream's cost comes from its own user's changes, as a watching dashboard's
   would): the single-POST rate beside them, and each probe reading's lag from its ``202``
   (received by the probe) to the event of its bucket (received by one selector thread
   reading every stream).

Each probe reading has its own minute bucket, so its event is known by the bucket alone;
the buckets start at the present minute (``PROBE_BASE``), as a live page's readings do.
The halves go in the order without/with on even runs and with/without on odd ones: the
store grows and compaction starts during a run, and the machine's own pace drifts, so a
fixed order would charge that drift to one side. Beside each rate: the workers' CPU per
request (their user + system time over the half, divided by the requests answered), the
cost streams add, steadier on a shared machine than the rate.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.bench_common import SINGLE_PATH, log, median, percentile
from ops.bench_machine import workers_cpu_s
from ops.bench_plan import parse_args
from ops.bench_servers import running, service_server
from ops.bench_wrk import run_wrk
from ops.server import Server

PROBE_INTERVAL_S = 0.05
STREAMS = 200
# probe k writes minute k from the minute the bench started: readings of the present, as a
# live page follows (a stream computes buckets older than its kept rows by the query)
PROBE_BASE = datetime.now(UTC).replace(second=0, microsecond=0)
STREAM_PATH = "/metrics/heart-rate/stream"
_DATA = re.compile(rb'data: \{"timestamp": "([^"]+)"')
TARGETS = {"lag_p50_ms": 250.0, "lag_p99_ms": 1000.0, "rate_share": 0.9}


def minute_label(k: int) -> str:
    return (PROBE_BASE + timedelta(minutes=k)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Streams:
    """Open streams on raw sockets, read by one selector thread; arrival time per
    (user, bucket label)."""

    port: int
    users: list[str]
    worker_of: dict[str, str] = field(default_factory=dict)
    arrived: dict[tuple[str, str], float] = field(default_factory=dict)
    _socks: dict[socket.socket, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def open(self) -> None:
        for user in self.users:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            sock.sendall(f"GET {STREAM_PATH}?user_id={user} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            served = re.search(rb"x-served-by: (\S+)", head, re.IGNORECASE)
            if not head.startswith(b"HTTP/1.1 200") or served is None:
                raise RuntimeError(f"stream not opened: {head[:300]!r}")
            self.worker_of[user] = served.group(1).decode()
            sock.setblocking(False)
            self._socks[sock] = user
        self._thread = threading.Thread(target=self._read, name="streams", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        sel = selectors.DefaultSelector()
        for sock in self._socks:
            sel.register(sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(65536)
                now = time.monotonic()
                for label in _DATA.findall(data):
                    self.arrived.setdefault((self._socks[sock], label.decode()), now)
        sel.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self._socks:
            sock.close()


@dataclass(slots=True)
class Probe:
    """A reading every PROBE_INTERVAL_S for the next streamed user, through the worker
    that does not hold its stream; the 202's arrival time per (user, bucket label)."""

    port: int
    users: list[str]
    worker_of: dict[str, str]
    acked: dict[tuple[str, str], float] = field(default_factory=dict)
    errors: int = 0
    _k: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, first_k: int) -> None:
        self._k = first_k
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self._k

    def _run(self) -> None:
        conns = _connection_per_worker(self.port)
        while not self._stop.wait(PROBE_INTERVAL_S):
            self._k += 1
            user = self.users[self._k % len(self.users)]
            stream_worker = self.worker_of.get(user)
            worker = next((w for w in conns if w != stream_worker), next(iter(conns)))
            label = minute_label(self._k)
            body = json.dumps(
                {"user_id": user, "device_id": "device_a", "timestamp": label, "heart_rate": 70}
            )
            try:
                conns[worker].request(
                    "POST", SINGLE_PATH, body, {"Content-Type": "application/json"}
                )
                resp = conns[worker].getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conns = _connection_per_worker(self.port)
                continue
            if resp.status == 202:
                self.acked[(user, label)] = time.monotonic()
            else:
                self.errors += 1


def _connection_per_worker(port: int, workers: int = 2) -> dict[str, http.client.HTTPConnection]:
    """Keep-alive connections, one per worker (new connections land where the kernel puts them)."""
    found: dict[str, http.client.HTTPConnection] = {}
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        worker = resp.getheader("x-served-by", "")
        if worker in found:
            conn.close()
        else:
            found[worker] = conn
        if len(found) >= workers:
            break
    return found


@dataclass(slots=True)
class StreamResults:
    streams: int
    rate_without: list[float] = field(default_factory=list)
    rate_with: list[float] = field(default_factory=list)
    cpu_without: list[float] = field(default_factory=list)  # workers' CPU us a request
    cpu_with: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    missing: int = 0
    probe_errors: int = 0

    def render(self) -> str:
        without, with_ = median(self.rate_without), median(self.rate_with)
        p50, p99 = percentile(self.lags_ms, 50), percentile(self.lags_ms, 99)
        share = with_ / without if without else float("nan")
        pairs = " / ".join(
            f"{b / a:.0%}" for a, b in zip(self.rate_without, self.rate_with, strict=True)
        )
        cpu = median(self.cpu_with) / median(self.cpu_without) - 1
        rows = [
            ("single-POST rate, no streams (req/s)", f"{without:,.0f}", ""),
            (
                f"single-POST rate, {self.streams} streams open (req/s)",
                f"{with_:,.0f}",
                f"{share:.1%} of no streams (each run's pair: {pairs}; "
                f"target ≥ {TARGETS['rate_share']:.0%})",
            ),
            (
                "workers' CPU per request, no streams / streams (µs)",
                f"{median(self.cpu_without):.0f} / {median(self.cpu_with):.0f}",
                f"streams cost {cpu:+.1%}",
            ),
            (
                "event lag p50, 202 → event on the other worker (ms)",
                f"{p50:.0f}",
                f"target ≤ {TARGETS['lag_p50_ms']:.0f}",
            ),
            ("event lag p99 (ms)", f"{p99:.0f}", f"target ≤ {TARGETS['lag_p99_ms']:.0f}"),
            (
                "probe readings / events missing / probe errors",
                f"{len(self.lags_ms) + self.missing} / {self.missing} / {self.probe_errors}",
                "",
            ),
        ]
        lines = ["## Streams", "", "| figure | value | note |", "|---|---|---|"]
        return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def measure_streams(
    server: Server, streams: int, duration_s: int, runs: int, connections: int = 64
) -> StreamResults:
    """The two halves of each run (see the module docstring) against a started ``server``."""
    out = StreamResults(streams)
    users = [f"live-{i:03d}" for i in range(streams)]
    k = 0
    for run in range(runs):
        for with_streams in (False, True) if run % 2 == 0 else (True, False):
            opened = Streams(server.port, users)
            if with_streams:
                opened.open()
            probe = Probe(server.port, users, opened.worker_of)
            probe.start(k)
            cpu_before = workers_cpu_s(server)
            wrk = run_wrk(
                server.url + SINGLE_PATH,
                connections,
                1,
                duration_s,
                "single",
                f"s{run}{int(with_streams)}",
            )
            cpu_us = (workers_cpu_s(server) - cpu_before) / max(1, wrk.requests) * 1e6
            k = probe.stop()
            time.sleep(2)  # the last probe's events
            opened.close()
            (out.rate_with if with_streams else out.rate_without).append(wrk.ok_per_s)
            (out.cpu_with if with_streams else out.cpu_without).append(cpu_us)
            out.probe_errors += probe.errors
            if with_streams:
                for key, acked in probe.acked.items():
                    if key in opened.arrived:
                        out.lags_ms.append(max(0.0, opened.arrived[key] - acked) * 1000)
                    else:
                        out.missing += 1
            label = "with" if with_streams else "without"
            log(
                f"streams run {run + 1}, {label} streams: {wrk.ok_per_s:,.0f} req/s, "
                f"{cpu_us:.0f} us of worker CPU a request"
            )
    return out


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench_stream")
    p.add_argument("--streams", type=int, default=STREAMS)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int)
    a = p.parse_args(argv)
    plan = parse_args([] if a.workers is None else ["--workers", str(a.workers)])
    with tempfile.TemporaryDirectory(prefix="hr-bench-stream-") as name:
        tmp = Path(name)
        server = service_server("service-stream", tmp / "data", plan, tmp)
        with running(server):
            results = measure_streams(server, a.streams, a.duration, a.runs)
    print(results.render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
