"""What the figures were measured on: the machine, and how busy others kept it meanwhile."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path

import polars as pl

from ops.server import ROOT, Server

TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # the unit of /proc's CPU times


def machine_lines(data_root: Path) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).splitlines()[0].split(" Copyright")[0]
    return [
        f"- cores: {os.cpu_count()} ({model}); memory: {mem_kb / 1024 / 1024:.1f} GiB; "
        f"kernel {platform.release()}",
        f"- Python {platform.python_version()}, polars {pl.__version__}, {wrk_version}",
        f"- data dirs under {data_root} ({filesystem_of(data_root)}); code at git {git or '?'}",
        f"- load before start: {background_load()}",
    ]


def filesystem_of(path: Path) -> str:
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mount, fstype, *_ = line.split()
        mount = mount.replace("\\040", " ")
        if str(path).startswith(mount) and len(mount) > len(best[0]):
            best = (mount, fstype, dev)
    return f"{best[1]} on {best[2]}"


class CpuWatch:
    """How much CPU processes other than ours used between ``start`` and ``share``.

    Ours: this process, its waited-for children (wrk, stopped servers and, through their
    masters, their workers) and the live ``servers``' masters and workers read from /proc.
    """

    def __init__(self, servers: list[Server]) -> None:
        self._servers = servers  # read at every sample: servers made later count too
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) * TICK_S
        t = os.times()
        ours = t.user + t.system + t.children_user + t.children_system
        for server in self._servers:
            if server.proc is not None and server.proc.returncode is None:
                pids = [server.proc.pid, *server.worker_pids()]
                ours += sum(proc_cpu_s(pid) for pid in pids)
        return time.monotonic(), busy, ours

    def share(self) -> float:
        """Share of all cores (0..1) used by other processes since ``start``."""
        wall0, busy0, ours0 = self._start
        wall1, busy1, ours1 = self._sample()
        cores = os.cpu_count() or 1
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(1e-9, (wall1 - wall0) * cores)


def proc_cpu_s(pid: int, children: bool = True) -> float:
    """CPU seconds of process ``pid`` so far (0 once gone), with its waited-for children's
    unless ``children`` is False."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11 : 15 if children else 13]) * TICK_S  # u/s, cu/cs


def workers_cpu_s(server: Server) -> float:
    """CPU seconds the server's live workers have used so far, their own only (a worker's
    compaction child, counted once it exits, would land in one run at random)."""
    return sum(proc_cpu_s(pid, children=False) for pid in server.worker_pids())


def background_load() -> str:
    """CPU busy share over one second before we start anything, and the load average."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    t0, i0 = sample()
    time.sleep(1)
    t1, i1 = sample()
    busy = 100 * (1 - (i1 - i0) / max(1, t1 - t0))
    load1 = os.getloadavg()[0]
    return f"{busy:.0f}% CPU busy (1 s sample), load average {load1:.2f}"
