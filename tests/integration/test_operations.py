"""Operational behaviour against real gunicorn: readiness under storage faults, metrics
across worker restarts, workers outliving a killed master."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ops.server import ROOT, gunicorn_argv
from tests.integration.conftest import request, wait_until
from tests.integration.test_server import PATH, reading, scrape, series, stamp

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 32 MiB tmpfs that the test can fill: a real full disk, even for root."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_full_disk_answers_503_and_recovers_by_itself(server_factory, small_disk) -> None:
    server = server_factory(
        workers=2,
        data_dir=small_disk / "data",
        HR_MIN_FREE_BYTES="4194304",
        HR_FLUSH_INTERVAL_S="3600",
    )
    assert request(server, "GET", "/ready")[0] == 200
    for i in range(10):
        assert request(server, "POST", PATH, reading("disk", i, 70))[0] == 202
    filler = fill(small_disk)
    status, _, body = request(server, "GET", "/ready")
    assert status == 503
    reasons = body["reasons"]  # type: ignore[index]
    assert any("free" in reason for reason in reasons)
    assert any("not writable" in reason for reason in reasons)
    status, headers, body = request(
        server,
        "POST",
        PATH + "/batch",
        {"readings": [reading("disk", 100 + i, 70) for i in range(2000)]},
    )
    assert status == 503
    assert headers["retry-after"].isdigit()
    assert body["error"] == "storage_full"  # type: ignore[index]
    filler.unlink()
    wait_until(lambda: request(server, "GET", "/ready")[0] == 200, 30, "ready again")
    assert request(server, "POST", PATH, reading("disk", 10, 70))[0] == 202
    assert len(series(server, "disk")) == 11


def test_unreadable_manifest_makes_ready_fail_until_repaired(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_INTERVAL_S="0.2")
    assert request(server, "POST", PATH, reading("mf", 0, 70))[0] == 202
    manifest = server.data_dir / "manifest.json"
    wait_until(manifest.exists, 30, "a flush")
    good = manifest.read_bytes()
    manifest.write_bytes(b"{not json")
    status, _, body = request(server, "GET", "/ready")
    assert status == 503
    assert any("manifest" in reason for reason in body["reasons"])  # type: ignore[index]
    manifest.write_bytes(good)
    # a background step that read the bad manifest meanwhile is named until its next retry
    wait_until(lambda: request(server, "GET", "/ready")[0] == 200, 30, "ready after repair")


def test_metrics_count_across_a_worker_restart(server_factory) -> None:
    server = server_factory(workers=2)
    for i in range(30):
        assert request(server, "POST", PATH, reading("restart", i, 70))[0] == 202
    old = server.worker_pids()
    os.kill(old[0], signal.SIGTERM)
    wait_until(
        lambda: len(server.worker_pids()) == 2 and old[0] not in server.worker_pids(),
        60,
        "a replacement worker",
    )
    for i in range(30, 50):
        assert request(server, "POST", PATH, reading("restart", i, 70))[0] == 202
    assert scrape(server)["hr_readings_accepted_total"] == 50
    assert len(series(server, "restart")) == 50


def test_workers_stop_gracefully_when_the_master_is_killed(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_INTERVAL_S="3600", HR_RECOVERY_INTERVAL_S="0.5")
    for i in range(20):
        assert request(server, "POST", PATH, reading("orphan", i, 70))[0] == 202
    workers = server.worker_pids()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"  # a zombie has exited; only its parent has not reaped it

    def all_gone() -> bool:
        return not any(running(pid) for pid in workers)

    wait_until(all_gone, 60, "orphaned workers to exit")
    again = server_factory(workers=2, data_dir=server.data_dir)
    assert len(series(again, "orphan")) == 20


def test_workers_compact_in_a_child_process_while_serving(server_factory) -> None:
    server = server_factory(
        workers=2,
        HR_FLUSH_INTERVAL_S="0.1",
        HR_COMPACT_INTERVAL_S="0.3",
        HR_COMPACT_MIN_FILES="2",
        HR_COMPACT_GRACE_S="0",
    )
    expected: dict[str, float] = {}
    for minute in range(40):
        value = 60 + minute % 50
        assert request(server, "POST", PATH, reading("compacted", minute, value))[0] == 202
        expected[stamp(minute)] = value
        time.sleep(0.03)  # several flushes, so several fragments to merge

    def merged() -> dict[str, float] | None:
        totals = scrape(server)
        done = totals.get("hr_compaction_files_total", 0.0)
        return totals if done and totals.get("hr_compaction_peak_rss_bytes", 0) > 0 else None

    totals = wait_until(merged, 60, "a compaction pass")
    levels = {
        f["level"] for f in json.loads((server.data_dir / "manifest.json").read_text())["fragments"]
    }
    assert levels & {1, 2}
    assert series(server, "compacted", 60) == expected
    assert 10 * 2**20 < totals["hr_compaction_peak_rss_bytes"] < 2**31
    for pid in server.worker_pids():  # no compaction process outlives its pass for long
        wait_until(lambda pid=pid: not children_of(pid), 30, "the compaction process to exit")


def children_of(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def test_a_port_held_by_another_program_stops_the_server_at_start(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        metrics_dirs = set(Path("/dev/shm").glob("hr-prometheus-*"))
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PROMETHEUS_MULTIPROC_DIR", "HR_DATA_DIR")
        }
        done = subprocess.run(
            gunicorn_argv(port),
            cwd=ROOT,
            env={**env, "HR_DATA_DIR": str(tmp_path / "data")},
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"Cannot listen at 127.0.0.1:{port}: Address already in use" in done.stderr.decode()
    assert b"Booting worker" not in done.stderr
    assert set(Path("/dev/shm").glob("hr-prometheus-*")) <= metrics_dirs  # its own is gone
