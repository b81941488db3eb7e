"""Against real gunicorn: private files under umask 0, unforgeable text log lines."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.server import ROOT
from tests.integration.conftest import request
from tests.integration.test_server import PATH, reading
from tests.unit.test_private_files import loose_modes

pytestmark = pytest.mark.integration


def maint_under_umask_0(data_dir: Path, *args: str) -> None:
    umask_0 = ["sh", "-c", 'umask 0; exec "$@"', "sh"]
    subprocess.run(
        [*umask_0, sys.executable, "-m", "service.maintenance", "--data-dir", str(data_dir), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def test_a_server_under_umask_0_keeps_data_private_and_logs_unforgeable(
    server_factory, tmp_path: Path
) -> None:
    old = os.umask(0)  # inherited by gunicorn and its workers
    try:
        server = server_factory(workers=2, HR_LOG_FORMAT="text")
    finally:
        os.umask(old)
    for minute in range(20):
        body = {"readings": [reading("u1", minute, 70.0), reading("u2", minute, 80.0)]}
        assert request(server, "POST", PATH + "/batch", body)[0] == 202
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/x%0aFORGED%20line%0d%1b[2J")
    assert conn.getresponse().status == 404
    conn.close()
    assert server.stop() == 0  # flushes every buffer

    maint_under_umask_0(server.data_dir, "compact", "--full")
    maint_under_umask_0(server.data_dir, "backup", str(tmp_path / "backup"))
    maint_under_umask_0(server.data_dir, "export", "u1", str(tmp_path / "backup" / "u1.csv"))
    assert any((server.data_dir / "fragments").iterdir())
    assert loose_modes(server.data_dir) == []
    assert loose_modes(tmp_path / "backup") == []

    log = server.log.read_text()
    assert "GET /x\\nFORGED line\\r\\x1b[2J 404" in log
    assert not any(line.startswith("FORGED") for line in log.splitlines())
