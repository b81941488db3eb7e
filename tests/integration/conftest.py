"""Real gunicorn with several uvicorn workers on a free port and a temporary data dir."""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.server import Server, start_service


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


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[Server] = []

    def factory(workers: int = 2, data_dir: Path | None = None, **env: str) -> Server:
        server = start_service(
            data_dir or tmp_path / "data", tmp_path / "gunicorn.log", workers, **env
        )
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(signal.SIGTERM, timeout_s=30)
