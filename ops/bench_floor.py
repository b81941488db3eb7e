"""The floor phase: the write targets beside the least work any design of this write path
must do; ``./ops/bench --phases floor``.

Three servers under the same gunicorn config: the bare ASGI ceiling (reads the body,
answers 202), the floor (``ops.bench_noop:durable``: the service's parser and checks, its
WAL frame, a group commit with fsync, nothing else) and the service as ``ops/serve``
starts it. For single POSTs, batches at ``--batch-connections`` and at 64 connections,
each run loads the three in turn. Where the floor misses a target, the service cannot
meet it on this machine without a faster parser or a cheaper durable write: everything
else it does (buffer, flush, compaction, counters, access log, layers) only adds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench_common import BATCH_PATH, SINGLE_PATH, log, median
from ops.bench_plan import Plan
from ops.bench_servers import noop_server, running, service_server
from ops.bench_wrk import WrkResult, check_batch_body, run_wrk, write_batch_bodies
from ops.server import Server

WIDE = 64
# the targets the floor is held against (ops/bench's write targets, 2 workers on 2 cores)
SINGLE_SHARE, BATCH_READINGS, WIDE_READINGS, BATCH_P99_MS = 0.5, 1_500_000, 2_000_000, 50.0

LOADS = ("single", "batch", "wide")


@dataclass(slots=True)
class FloorResults:
    # per load, per server ("raw", "floor", "service"): one wrk result per run
    runs: dict[str, dict[str, list[WrkResult]]] = field(default_factory=dict)

    def add(self, load: str, server: str, result: WrkResult) -> None:
        self.runs.setdefault(load, {}).setdefault(server, []).append(result)

    def rate(self, load: str, server: str, per_request: int = 1) -> float:
        return median([r.ok_per_s * per_request for r in self.runs[load][server]])

    def p99(self, load: str, server: str) -> float:
        return median([r.p99_ms for r in self.runs[load][server]])


def measure_floor(plan: Plan, tmp: Path, logs: Path) -> str:
    """Run the three loads ``plan.runs`` times against the three servers; the table."""
    raw = noop_server(plan, logs, "raw")
    floor = noop_server(plan, logs, "durable", tmp / "floor-data")
    service = service_server("service-floor", tmp / "floor-service-data", plan, logs)
    res = FloorResults()
    servers = {"raw": raw, "floor": floor, "service": service}
    with running(raw, floor, service):
        for run in range(plan.runs):
            log(f"floor phase run {run + 1}/{plan.runs}: raw ASGI, the floor, the service")
            tag = f"f{time.strftime('%H%M%S')}r{run}"
            for load in LOADS:
                bodies = [] if load == "single" else _bodies(plan, tmp, f"{tag}{load}", service)
                for name, server in servers.items():
                    res.add(load, name, _load(plan, server, load, bodies, f"{tag}{name}"))
                    time.sleep(1)
    return render(res, plan)


def _bodies(plan: Plan, tmp: Path, prefix: str, service: Server) -> list[Path]:
    bodies = write_batch_bodies(tmp / "floor-bodies", prefix, plan)
    check_batch_body(service.port, bodies[0], plan.batch_size)
    return bodies


def _load(plan: Plan, server: Server, load: str, bodies: list[Path], prefix: str) -> WrkResult:
    if load == "single":
        url, args, conns = server.url + SINGLE_PATH, ("single", prefix), plan.connections
    else:
        url, args = server.url + BATCH_PATH, ("batch", *map(str, bodies))
        conns = plan.batch_connections if load == "batch" else WIDE
    return run_wrk(url, conns, plan.wrk_threads, plan.duration_s, *args)


def render(res: FloorResults, plan: Plan) -> str:
    """The phase's table: each write target with the service, the floor and raw ASGI."""
    size = plan.batch_size
    rows = [
        ("single POST req/s", "single", 1, f">= {SINGLE_SHARE:.0%} of raw ASGI", None),
        (f"batch readings/s, {plan.batch_connections} conns", "batch", size, "", BATCH_READINGS),
        (f"batch readings/s, {WIDE} conns", "wide", size, "", WIDE_READINGS),
    ]
    lines = [
        "| measure (medians) | service | floor: parse, WAL frame, fsync | raw ASGI | "
        "target | floor meets it |",
        "|---|---|---|---|---|---|",
    ]
    for label, load, per, target, goal in rows:
        raw, floor, service = (res.rate(load, s, per) for s in ("raw", "floor", "service"))
        if goal is None:
            met = floor >= SINGLE_SHARE * raw
            share = f" ({floor / raw:.0%})"
            svc_share = f" ({service / raw:.0%})"
        else:
            met, share, svc_share, target = floor >= goal, "", "", f">= {goal:,}"
        lines.append(
            f"| {label} | {service:,.0f}{svc_share} | {floor:,.0f}{share} | {raw:,.0f} | "
            f"{target} | {'yes' if met else '**no**'} |"
        )
    for load, label in (
        ("single", "single POST (no probe)"),
        ("batch", "batch"),
        ("wide", "batch"),
    ):
        conns = {"single": plan.connections, "batch": plan.batch_connections}.get(load, WIDE)
        p99s = [res.p99(load, s) for s in ("service", "floor", "raw")]
        goal = 20.0 if load == "single" else BATCH_P99_MS
        lines.append(
            f"| {label} p99, {conns} conns | {p99s[0]:.1f} ms | {p99s[1]:.1f} ms | "
            f"{p99s[2]:.1f} ms | <= {goal:.0f} ms | {'yes' if p99s[1] <= goal else '**no**'} |"
        )
    runs = "; ".join(
        f"{load} {name}: " + ", ".join(f"{r.ok_per_s:,.0f}" for r in results)
        for load, by in res.runs.items()
        for name, results in by.items()
    )
    return "\n".join(
        [
            "### The floor of the write path",
            "",
            *lines,
            "",
            f"Requests/s of every run: {runs}. The floor is `ops.bench_noop:durable` under the "
            "service's gunicorn config; where it misses a target, so must the service.",
        ]
    )
