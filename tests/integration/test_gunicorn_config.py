"""The gunicorn settings that the benchmark and the robustness tests depend on."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ops.server import ROOT

pytestmark = pytest.mark.integration

_PRINT = (
    "import json, os, runpy; runpy.run_path('gunicorn.conf.py'); "
    "print(json.dumps({'dir': os.environ['PROMETHEUS_MULTIPROC_DIR']}))"
)


def _load(**env: str) -> dict[str, object]:
    full = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | env
    done = subprocess.run(
        [sys.executable, "-c", _PRINT], cwd=ROOT, env=full, capture_output=True, check=True
    )
    loaded: dict[str, object] = json.loads(done.stdout)
    return loaded


@pytest.mark.skipif(not os.access("/dev/shm", os.W_OK), reason="no writable /dev/shm")
def test_metric_files_default_to_shared_memory_not_the_data_disk() -> None:
    # prometheus_client maps them into memory: a full disk under them is a SIGBUS
    loaded = _load()
    directory = Path(str(loaded["dir"]))
    try:
        assert directory.parent == Path("/dev/shm")
        assert directory.name.startswith("hr-prometheus-")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_given_metrics_directory_is_kept(tmp_path: Path) -> None:
    assert _load(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))["dir"] == str(tmp_path)


@pytest.mark.skipif(not os.access("/dev/shm", os.W_OK), reason="no writable /dev/shm")
def test_a_dead_servers_metrics_directory_is_removed_at_start_and_a_live_ones_kept() -> None:
    # a master killed with -9 never runs on_exit: its metric files would stay in memory
    shm = Path("/dev/shm")
    dead = Path(tempfile.mkdtemp(prefix="hr-prometheus-", dir=shm))
    live = Path(tempfile.mkdtemp(prefix="hr-prometheus-", dir=shm))
    unknown = Path(tempfile.mkdtemp(prefix="hr-prometheus-", dir=shm))
    created: Path | None = None
    for directory in (dead, live):
        (directory / ".owner.lock").touch()
        (directory / "counter_123.db").write_bytes(b"\0" * 64)
    (unknown / "counter_123.db").write_bytes(b"\0" * 64)  # no lock file: left alone
    held = os.open(live / ".owner.lock", os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running server's master does
        created = Path(str(_load()["dir"]))
        assert not dead.exists()
        assert (live / "counter_123.db").exists()
        assert (unknown / "counter_123.db").exists()
        assert (created / ".owner.lock").exists()
    finally:
        os.close(held)
        for directory in (dead, live, unknown, created):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


_MALLOPT = (
    "import ctypes, json, runpy\n"
    "calls = []\n"
    "class Libc:\n"
    "    def mallopt(self, parameter, value):\n"
    "        calls.append([parameter, value])\n"
    "        return 1\n"
    "ctypes.CDLL = lambda name: Libc()\n"
    "runpy.run_path('gunicorn.conf.py')['_tune_malloc']()\n"
    "print(json.dumps(calls))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [[-8, 2], [-3, 131072]]),  # M_ARENA_MAX, M_MMAP_THRESHOLD
        ({"MALLOC_ARENA_MAX": "4"}, [[-3, 131072]]),  # glibc read the variable itself
    ],
)
def test_each_worker_tunes_glibc_malloc_unless_the_environment_does(
    env: dict[str, str], expected: list[list[int]], tmp_path: Path
) -> None:
    full = (
        {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        | env
        | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    done = subprocess.run(
        [sys.executable, "-c", _MALLOPT], cwd=ROOT, env=full, capture_output=True, check=True
    )
    assert json.loads(done.stdout) == expected


_POLARS = "import polars as pl; pl.DataFrame({'a': [1, 2]}).sum()"


def test_polars_allocator_takes_the_workers_settings(tmp_path: Path) -> None:
    """What ``post_fork`` gives Polars' jemalloc is read by it: its statistics, printed at
    exit, show two arenas and the background thread (eight arenas on 2 cores otherwise)."""
    conf = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy; print(runpy.run_path('gunicorn.conf.py')['JEMALLOC_CONF'])",
        ],
        cwd=ROOT,
        env=os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    env = os.environ | {"_RJEM_MALLOC_CONF": conf + ",stats_print:true"}
    done = subprocess.run(
        [sys.executable, "-c", _POLARS], env=env, capture_output=True, check=True, text=True
    )
    assert "opt.narenas: 2\n" in done.stderr
    assert "opt.background_thread: true" in done.stderr
