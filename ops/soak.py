"""Memory under sustained load; run it through ``./ops/soak`` (default 300 s).

Starts the service as ``ops/serve`` does against a temporary data dir and drives it with
two wrk loads at once for the whole duration: single-reading POSTs (every request a
distinct reading) and 1,000-reading batch POSTs cycling through pre-generated bodies.
Every ``--every`` seconds it prints each worker's resident memory (VmRSS) and the number
of fragments in the manifest, then the peak (VmHWM) per worker. Traffic goes to 127.0.0.1
only and stops by itself; the server is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from ops.bench_common import BATCH_PATH, SINGLE_PATH
from ops.bench_plan import parse_args
from ops.bench_servers import running, service_server
from ops.bench_wrk import WrkResult, run_wrk, write_batch_bodies
from ops.server import Server, proc_status_kb


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=300, help="seconds of load (300)")
    p.add_argument("--every", type=int, default=15, help="seconds between samples (15)")
    p.add_argument("--bodies", type=int, default=64, help="distinct batch bodies (64)")
    p.add_argument(
        "--single-connections", type=int, default=32, help="single-POST connections (32; 0: none)"
    )
    p.add_argument(
        "--batch-connections", type=int, default=4, help="batch-POST connections (4; 0: none)"
    )
    args = p.parse_args(argv)
    plan = parse_args(["--batch-bodies", str(args.bodies)])
    with tempfile.TemporaryDirectory(prefix="hr-soak-") as tmp:
        root = Path(tmp)
        data = root / "data"
        server = service_server("service-soak", data, plan, root)
        bodies_args = [str(b) for b in write_batch_bodies(root / "bodies", "soak", plan)]
        results: dict[str, WrkResult] = {}

        def load(name: str, path: str, connections: int, *wrk_args: str) -> None:
            url = server.url + path
            results[name] = run_wrk(url, connections, 1, args.duration, *wrk_args)

        with running(server):
            single = ("single", SINGLE_PATH, args.single_connections, "single", "soak")
            batch = ("batch", BATCH_PATH, args.batch_connections, "batch", *bodies_args)
            loads = [threading.Thread(target=load, args=a) for a in (single, batch) if a[2] > 0]
            for t in loads:
                t.start()
            compactor = sample(server, loads, data, args.every)
            for t in loads:
                t.join()
            peak = ", ".join(f"{v:.0f}" for v in server.peak_rss_mb())
        print()
        for name, r in results.items():
            print(f"{name}: {r.ok_per_s:,.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms")
        print(f"peak RSS (VmHWM) per worker: {peak} MB")
        if compactor:
            print(f"compaction process, last pass's peak RSS: max {max(compactor):.0f} MB")
    return 0


def sample(server: Server, loads: list[threading.Thread], data: Path, every: int) -> list[float]:
    """A table row every ``every`` seconds while the loads run; the compaction peaks seen."""
    started = time.monotonic()
    print("| seconds | RSS per worker (MB) | compaction process peak (MB) | fragments |")
    print("|---|---|---|---|")
    compactor: list[float] = []
    while any(t.is_alive() for t in loads):
        time.sleep(every)
        rss = [proc_status_kb(pid, "VmRSS") for pid in server.worker_pids()]
        mb = ", ".join(f"{v / 1024:.0f}" for v in rss if v is not None)
        child = compactor_peak_mb(server)
        compactor += [child] if child else []
        print(
            f"| {time.monotonic() - started:.0f} | {mb} "
            f"| {f'{child:.0f}' if child else '-'} | {fragments(data)} |"
        )
        sys.stdout.flush()
    return compactor


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
