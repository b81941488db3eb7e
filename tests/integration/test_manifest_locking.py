"""Manifest commits from several processes: none lost, and a held lock is waited for."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from service.storage.manifest import Manifest
from tests.unit.test_manifest import info

pytestmark = pytest.mark.integration


def test_concurrent_commits_from_several_processes_lose_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_commit_many, args=(str(path), f"p{n}", 40)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    snapshot = Manifest(path, 5).read()
    assert sorted(f.name for f in snapshot.fragments) == sorted(
        f"p{n}-{i}" for n in range(4) for i in range(40)
    )
    assert snapshot.generation == 160
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_held_lock_makes_commits_wait_then_fail_as_busy(tmp_path: Path) -> None:
    from service.errors import ManifestBusy

    path = tmp_path / "manifest.json"
    manifest = Manifest(path, lock_timeout_s=0.2)
    manifest.commit(add=[info("a")])
    holder = multiprocessing.get_context("spawn").Process(
        target=_hold_lock, args=(str(path) + ".lock", str(tmp_path / "held"))
    )
    holder.start()
    try:
        _wait_for(tmp_path / "held")
        with pytest.raises(ManifestBusy):
            manifest.commit(add=[info("b")])
        assert [f.name for f in manifest.read().fragments] == ["a"]
    finally:
        holder.terminate()
        holder.join(30)
    manifest.commit(add=[info("b")])
    assert [f.name for f in manifest.read().fragments] == ["a", "b"]


def _commit_many(path: str, prefix: str, count: int) -> None:
    manifest = Manifest(Path(path), lock_timeout_s=60)
    for i in range(count):
        manifest.commit(add=[info(f"{prefix}-{i}")])


def _hold_lock(lock_path: str, flag: str) -> None:
    import time

    from filelock import FileLock

    with FileLock(lock_path):
        Path(flag).touch()
        time.sleep(120)


def _wait_for(flag: Path) -> None:
    import time

    deadline = time.monotonic() + 60
    while not flag.exists():
        assert time.monotonic() < deadline, "the lock holder never started"
        time.sleep(0.02)
