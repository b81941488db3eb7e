"""Access control on real gunicorn: keys managed with ``ops/maint keys`` while it serves,
and the start-up refusal of a server reachable beyond loopback without a key."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.server import ROOT, Server, free_port, gunicorn_argv
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def maint(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ops/maint`` without its bootstrap: the same module, in this environment."""
    env = {**os.environ, "HR_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "service.maintenance", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def get(port: int, path: str, secret: str | None) -> tuple[int, str]:
    """Status and serving worker of one request on a fresh connection (spread over both)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("x-served-by", "")
    finally:
        conn.close()


def test_a_revoked_key_is_refused_by_every_worker(server_factory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = maint(data, "keys", "create", "dash", "--scope", "read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.splitlines()[-1]
    assert secret.startswith("hr_")
    server = server_factory(2, data, HR_AUTH="on")
    path = "/users?limit=1"
    assert get(server.port, path, None)[0] == 401
    served: dict[str, int] = {}

    def every_worker_answers(status: int) -> bool:
        code, worker = get(server.port, path, secret)
        if code == status:
            served[worker] = code
        else:
            assert code == 200, code  # before the revocation reached that worker
            assert served.get(worker) != 401, "a worker took a revoked key again"
        return len([w for w, c in served.items() if c == status]) == 2

    wait_until(lambda: every_worker_answers(200), 60, "both workers to take the key")
    revoked = maint(data, "keys", "revoke", "dash")
    assert revoked.returncode == 0, revoked.stderr
    wait_until(lambda: every_worker_answers(401), 30, "both workers to refuse the key")
    log = server.log.read_text()
    assert secret not in log
    assert '"key":"dash"' in log  # the access log names the key


def test_auto_refuses_to_listen_beyond_loopback_without_a_key(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    argv = gunicorn_argv(port, 1)
    argv[argv.index("--bind") + 1] = f"0.0.0.0:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("HR_AUTH", "HR_LISTEN")}
    (tmp_path / "prom").mkdir()
    env |= {"HR_DATA_DIR": str(data), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    log = tmp_path / "gunicorn.log"
    server = Server(argv, env, port, 1, log, data)
    try:
        with pytest.raises(RuntimeError, match="exited at start-up"):
            server.start()
    finally:
        server.stop()  # at once when it exited as it should
    refused = log.read_text()
    assert "keys create NAME --scope admin" in refused
    assert "0.0.0.0:" in refused
    assert "Booting worker" not in refused

    created = maint(data, "keys", "create", "ops", "--scope", "admin")
    assert created.returncode == 0, created.stderr
    server = Server(argv, env, port, 1, log, data).start()
    try:
        assert get(port, "/health", None)[0] == 200
        assert get(port, "/users", None)[0] == 401  # on: the bind is beyond loopback
        assert get(port, "/users", created.stdout.splitlines()[-1])[0] == 200
    finally:
        assert server.stop() == 0, server.log_tail()
