"""Manifest commits: atomic, locked, and lossless under concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.storage.fragments import FragmentInfo
from service.storage.manifest import Manifest


def info(name: str) -> FragmentInfo:
    return FragmentInfo(name, "heart_rate", 1, 0, 1)


def _commit_many(path: str, prefix: str, count: int) -> None:
    manifest = Manifest(Path(path), lock_timeout_s=60)
    for i in range(count):
        manifest.commit(add=[info(f"{prefix}-{i}")])


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


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15)), max_size=40))
def test_commits_apply_like_a_set(tmp_path_factory, ops) -> None:
    manifest = Manifest(tmp_path_factory.mktemp("m") / "manifest.json", 5)
    model: list[str] = []
    for is_add, n in ops:
        name = f"f{n}"
        if is_add:
            manifest.commit(add=[info(name)])
            if name not in model:
                model.append(name)
        else:
            manifest.commit(remove=[name])
            model = [m for m in model if m != name]
        assert [f.name for f in manifest.read().fragments] == model


def test_readers_see_a_replaced_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    reader, writer = Manifest(path, 5), Manifest(path, 5)
    assert reader.read().fragments == ()
    writer.commit(add=[info("a")])
    assert [f.name for f in reader.read().fragments] == ["a"]
    writer.commit(add=[info("b")], remove=["a"])
    assert [f.name for f in reader.read().fragments] == ["b"]


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
