"""Load with wrk: one bounded run of ops/bench_post.lua, and the batch bodies it sends."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ops.bench_common import BATCH_PATH, WRITE_BASE, iso, log
from ops.bench_plan import Plan
from ops.server import ROOT

LUA = ROOT / "ops" / "bench_post.lua"


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


def run_wrk(
    url: str,
    connections: int,
    threads: int,
    duration_s: int,
    *args: str,
    script: Path = LUA,
    headers: Sequence[str] = (),
) -> WrkResult:
    """One wrk run of ``script`` (a Lua script printing a BENCH_RESULT line); ``headers``
    ("Name: value") go with every request."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s"]
    for header in headers:
        cmd += ["-H", header]
    cmd += ["--latency", "-s", str(script), url, "--", *args]
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
