"""Real gunicorn with several uvicorn workers on a free port and a temporary data dir."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path
    workers: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


def request(
    server: Server,
    method: str,
    path: str,
    body: object = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict, object]:
    """One request; a fresh connection unless ``conn`` is given."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        c.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read()
        ctype = r.getheader("content-type", "")
        parsed = json.loads(raw) if "json" in ctype else raw.decode()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
    finally:
        if own:
            c.close()


def wait_until(condition, timeout_s: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(data_dir: Path, log: Path, workers: int = 2, **env: str) -> Server:
    full_env = {
        **os.environ,
        "HR_DATA_DIR": str(data_dir),
        # beside the data, not on its disk: a test that fills the data disk fills only it
        "PROMETHEUS_MULTIPROC_DIR": str(log.parent / f"prom-{data_dir.name}"),
        "HR_LOG_LEVEL": "INFO",
        **env,
    }
    Path(full_env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    # every worker binds the address itself (reuse_port), so the port is chosen here
    url = f"http://127.0.0.1:{free_port()}"
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as sink:  # every log line goes to stderr (gunicorn.conf.py)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn.conf.py",
                "--bind",
                url.removeprefix("http://"),
                "--workers",
                str(workers),
                "--no-control-socket",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited early:\n{log.read_text()}")
        text = log.read_text()[offset:] if log.exists() else ""
        return text.count("Application startup complete") >= workers

    wait_until(ready, 60, "gunicorn to start")
    return Server(proc, url, data_dir, log, workers, env)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[Server] = []

    def factory(workers: int = 2, data_dir: Path | None = None, **env: str) -> Server:
        server = start_server(
            data_dir or tmp_path / "data", tmp_path / "gunicorn.log", workers, **env
        )
        started.append(server)
        return server

    yield factory
    for server in started:
        if server.proc.poll() is not None:
            continue
        workers = server.worker_pids()
        server.proc.terminate()
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in [server.proc.pid, *workers]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.proc.wait(timeout=30)
