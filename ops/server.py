"""Real gunicorn on a free 127.0.0.1 port: start it, wait until every worker serves, stop it.

One way to run the service for ``ops/bench``, ``ops/soak`` and ``tests/integration``, so a
benchmark figure and a test result come from the same kind of server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# uvicorn logs it once per worker, after the worker's lifespan (buffer, flusher) is up
READY_LINE = "Application startup complete"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM ...); None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def gunicorn_argv(port: int, workers: int | None = None, *extra: str) -> list[str]:
    """The service's gunicorn (or, with an app in ``extra``, that app) under gunicorn.conf.py."""
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    argv += ["--bind", f"127.0.0.1:{port}", "--no-control-socket"]
    if workers:
        argv += ["--workers", str(workers)]
    return [*argv, *extra]


class Server:
    """One gunicorn master we started; every line it writes is appended to ``log``.

    Ready once ``workers`` more "Application startup complete" lines are in the log than
    before the start, which needs gunicorn's default info log level.
    """

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        port: int,
        workers: int,
        log: Path,
        data_dir: Path | None = None,
        name: str = "gunicorn",
    ) -> None:
        self.argv = argv
        self.env = dict(env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workers = workers
        self.log = log
        self.data_dir = data_dir
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Server:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                start_new_session=True,  # a Ctrl-C reaches only us, and we stop it in order
            )
        deadline = time.monotonic() + timeout_s
        while self._ready_lines(offset) < self.workers:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self._kill(self.worker_pids())
                raise RuntimeError(f"{self.name} not ready in {timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def _ready_lines(self, offset: int) -> int:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").count(READY_LINE)

    def worker_pids(self) -> list[int]:
        """The master's children: its workers (and a worker's compaction child is not one)."""
        if self.proc is None:
            return []
        pid = self.proc.pid
        try:
            return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def peak_rss_mb(self) -> list[float]:
        """VmHWM (peak resident set) of each live worker, in MB."""
        values = [proc_status_kb(pid, "VmHWM") for pid in self.worker_pids()]
        return [v / 1024 for v in values if v is not None]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``sig`` to the master and return its exit status; SIGKILL to the master and
        its workers when it has not exited within ``timeout_s``."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        if self.proc.poll() is not None:
            return self.proc.returncode
        workers = self.worker_pids()
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return self._kill(workers)

    def _kill(self, workers: list[int]) -> int:
        assert self.proc is not None
        for pid in [self.proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_service(
    data_dir: Path,
    log: Path,
    workers: int = 2,
    **env: str,
) -> Server:
    """The service with its own data dir and metrics dir (beside ``log``, not on the data's
    disk: a test that fills the data disk fills only it); ``env`` overrides the rest."""
    metrics_dir = log.parent / f"prom-{data_dir.name}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "HR_DATA_DIR": str(data_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "HR_LOG_LEVEL": "INFO",
        **env,
    }
    # every worker binds the address itself (reuse_port), so the port is chosen here
    port = free_port()
    return Server(gunicorn_argv(port, workers), full_env, port, workers, log, data_dir).start()
