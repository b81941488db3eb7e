"""What access control costs single POSTs over HTTP: ``./ops/bench --phases auth``, or alone
``python -m ops.bench_auth [--duration 10] [--runs 3]``.

Two services as ``ops/serve`` starts them (fresh data dirs, the same gunicorn config), one
with ``HR_AUTH=off`` and one with ``HR_AUTH=on`` and an ``ingest`` key created in its data
dir before it starts. Both run at once (the idle one sleeps). wrk's single-POST load
(``bench_post.lua``, the writes phase's connections) sends the same
``Authorization: Bearer`` header to both, so their requests are byte for byte alike and
only the check differs. Each run measures both, in the order off/on on even runs and
on/off on odd ones, so a machine slowing or speeding up over the phase falls on both.

Per measurement: requests/s and p99, and the workers' CPU per request (user + system time
of the worker processes over the load, divided by the requests answered): the layer adds
to that CPU, and on a shared machine it is steadier than the rate, which also moves with
whatever else runs. The target: with the check, at least 95% of the rate without it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench_common import SINGLE_PATH, log, median
from ops.bench_machine import workers_cpu_s
from ops.bench_plan import Plan, parse_args
from ops.bench_servers import running, service_server
from ops.bench_wrk import run_wrk
from ops.server import Server
from service.auth import keys

TARGET_SHARE = 0.95  # the check may cost single POSTs at most 5%


@dataclass(slots=True)
class Variant:
    server: Server
    rates: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # workers' CPU per request

    def measure(self, plan: Plan, header: str, label: str) -> None:
        before = workers_cpu_s(self.server)
        wrk = run_wrk(
            self.server.url + SINGLE_PATH,
            plan.connections,
            plan.wrk_threads,
            plan.duration_s,
            "single",
            label,
            headers=[header],
        )
        used = workers_cpu_s(self.server) - before
        if wrk.non2xx or wrk.socket_errors:
            raise RuntimeError(
                f"{self.server.name}: {wrk.non2xx} non-2xx answers, {wrk.socket_errors} errors"
            )
        self.rates.append(wrk.ok_per_s)
        self.p99s.append(wrk.p99_ms)
        self.cpu_us.append(used / max(1, wrk.requests) * 1e6)
        log(
            f"{self.server.name}: {wrk.ok_per_s:,.0f} req/s, p99 {wrk.p99_ms:.1f} ms, "
            f"{self.cpu_us[-1]:.0f} us of worker CPU a request"
        )


@dataclass(slots=True)
class AuthResults:
    off: Variant
    on: Variant

    def render(self) -> str:
        pairs = [b / a for a, b in zip(self.off.rates, self.on.rates, strict=True)]
        rate_share = median(self.on.rates) / median(self.off.rates)
        cpu_ratio = median(self.on.cpu_us) / median(self.off.cpu_us)
        met = "yes" if rate_share >= TARGET_SHARE else "**no**"

        def runs(values: list[float], fmt: str) -> str:
            return " / ".join(format(v, fmt) for v in values)

        rows = [
            ("single POST req/s, off (runs)", f"{median(self.off.rates):,.0f}",
             runs(self.off.rates, ",.0f")),
            ("single POST req/s, on with a key (runs)", f"{median(self.on.rates):,.0f}",
             runs(self.on.rates, ",.0f")),
            ("on / off, rate (each run's pair)", f"{rate_share:.1%}",
             f"{runs(pairs, '.0%')}; target ≥ {TARGET_SHARE:.0%}: {met}"),
            ("p99 off / on (ms)", f"{median(self.off.p99s):.1f} / {median(self.on.p99s):.1f}", ""),
            ("workers' CPU per request, off / on (µs)",
             f"{median(self.off.cpu_us):.0f} / {median(self.on.cpu_us):.0f}",
             f"on costs {cpu_ratio - 1:+.1%}"),
        ]  # fmt: skip
        lines = ["## Access control", "", "| figure | value | note |", "|---|---|---|"]
        return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def measure_auth(plan: Plan, tmp: Path, logs: Path) -> AuthResults:
    """Both services started, then ``plan.runs`` alternating pairs (module docstring)."""
    on_dir = tmp / "auth-on-data"
    secret = keys.create(on_dir, "bench", ["ingest"], [], 5.0)
    header = f"Authorization: Bearer {secret}"
    off = Variant(service_server("service-auth-off", tmp / "auth-off-data", plan, logs,
                                 {"HR_AUTH": "off"}))  # fmt: skip
    on = Variant(service_server("service-auth-on", on_dir, plan, logs, {"HR_AUTH": "on"}))
    with running(off.server, on.server):
        for variant in (off, on):  # warm-up, not kept
            run_wrk(variant.server.url + SINGLE_PATH, plan.connections, plan.wrk_threads,
                    3, "single", f"w{variant.server.name}", headers=[header])  # fmt: skip
        for run in range(plan.runs):
            for variant in (off, on) if run % 2 == 0 else (on, off):
                name = "on" if variant is on else "off"
                variant.measure(plan, header, f"a{run}{name}")
    return AuthResults(off, on)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench_auth")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--runs", type=int, default=3, help="pairs of runs (3)")
    p.add_argument("--workers", type=int)
    a = p.parse_args(argv)
    extra = ["--duration", str(a.duration), "--runs", str(a.runs)]
    plan = parse_args(extra + ([] if a.workers is None else ["--workers", str(a.workers)]))
    with tempfile.TemporaryDirectory(prefix="hr-bench-auth-") as name:
        logs = Path(name) / "logs"
        logs.mkdir()
        results = measure_auth(plan, Path(name), logs)
    print(results.render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
