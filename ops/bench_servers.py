"""The two servers a benchmark compares: the service as ``ops/serve`` starts it, and the
no-op ceiling (``ops/bench_noop.py``) under the same gunicorn config."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from ops.bench_common import log
from ops.bench_plan import Plan
from ops.server import Server, free_port

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0

SERVERS: list[Server] = []  # every server we made, for CpuWatch


def server_env(data_dir: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without HR_* and metrics settings: defaults, as on a fresh
    machine; each gunicorn makes its own PROMETHEUS_MULTIPROC_DIR."""
    drop = ("PROMETHEUS_MULTIPROC_DIR", "POLARS_MAX_THREADS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HR_") and k not in drop}
    if data_dir is not None:
        env["HR_DATA_DIR"] = str(data_dir)
    env.update(extra or {})
    return env


def worker_count(plan: Plan) -> int:
    """Workers per server: --workers, else gunicorn.conf.py's default (cores, at least 2)."""
    return plan.workers or max(2, os.cpu_count() or 1)


def _server(
    name: str, argv: list[str], env: dict[str, str], port: int, plan: Plan, logs: Path
) -> Server:
    data_dir = Path(env["HR_DATA_DIR"]) if "HR_DATA_DIR" in env else None
    log_file = logs / f"{name}.log"
    server = Server(argv, env, port, worker_count(plan), log_file, data_dir, name)
    SERVERS.append(server)
    return server


def service_server(
    name: str, data_dir: Path, plan: Plan, logs: Path, extra: dict[str, str] | None = None
) -> Server:
    port = free_port()
    argv = ["ops/serve", "--bind", f"127.0.0.1:{port}"]
    if plan.workers:
        argv += ["--workers", str(plan.workers)]
    return _server(name, argv, server_env(data_dir, extra), port, plan, logs)


def noop_server(plan: Plan, logs: Path, app: str = "app", data_dir: Path | None = None) -> Server:
    """A ceiling of ``ops/bench_noop.py``: ``app`` (FastAPI), ``raw`` (bare ASGI) or
    ``durable`` (the floor phase's; its files go to ``data_dir``)."""
    port = free_port()
    argv = [".venv/bin/gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    if plan.workers:
        argv += ["--workers", str(plan.workers)]
    argv.append(f"ops.bench_noop:{app}")  # positional app overrides the config's wsgi_app
    return _server(
        "noop" if app == "app" else f"noop-{app}", argv, server_env(data_dir), port, plan, logs
    )


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Start each server in turn (and let it settle), stop them all with SIGTERM at the end."""
    try:
        for s in servers:
            log(f"starting {s.name}: {shlex.join(s.argv)} (port {s.port})")
            s.start(READY_TIMEOUT_S)
            time.sleep(1)
        yield
    finally:
        for s in servers:
            _stop(s)


def _stop(server: Server) -> None:
    if server.proc is None or server.proc.poll() is not None:
        return
    log(f"stopping {server.name} (SIGTERM to master {server.proc.pid})")
    if server.stop(signal.SIGTERM, STOP_TIMEOUT_S) == -signal.SIGKILL:
        log(f"{server.name} did not stop in {STOP_TIMEOUT_S:.0f}s; it was sent SIGKILL")
