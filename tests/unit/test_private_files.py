"""Health data is private on disk: directories 0700, files 0600, whatever the umask."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import export
from service.backup import backup
from service.schema import Rows
from service.storage.compaction import compact
from service.storage.recovery import replay_orphans
from service.storage.store import Store
from service.storage.wal import OwnedLog, encode_frame
from tests.unit.test_compaction import BASE, chunk


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def loose_modes(root: Path) -> list[str]:
    """Every directory not 0700 and file not 0600 under ``root`` (itself included)."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            found.append(f"{path.relative_to(root.parent)}: {mode:o}")
    return found


def test_every_file_and_directory_is_private_under_umask_0(tmp_path: Path, open_umask) -> None:
    root = tmp_path / "data"
    store = Store(root, "w1", 5)
    store.ensure_layout()
    log = OwnedLog(store.wal_dir, store.worker)  # its lock file and first segment
    log.current.append(encode_frame("heart_rate", 1, Rows(["u1"], ["-d"], [BASE], [70.0])))
    log.current.sync()
    rng = random.Random(5)
    for i in range(4):  # flushes: fragments, the manifest and its lock
        store.publish({"heart_rate": chunk(rng, i * 1000)})
    assert compact(store, force=True, grace_s=3600) is not None  # rollups, compaction.lock
    log.close(delete=False)
    assert replay_orphans(Store(root, "w2", 5)) == 1  # a WAL replayed by another worker
    backup(store, tmp_path / "backup")
    for name in ("u1.csv", "u1.parquet", "u1.ndjson"):
        out = tmp_path / "backup" / name
        export.write(export.readings(store, "u1", ["heart_rate"]), out, export.format_of(out))

    assert any(p.name.endswith(".rollup.parquet") for p in (root / "fragments").iterdir())
    assert (root / "compaction.lock").exists()
    assert (root / "manifest.json.lock").exists()
    assert loose_modes(root) == []
    assert loose_modes(tmp_path / "backup") == []


def test_start_tightens_a_data_dir_written_with_looser_modes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "wal").mkdir(parents=True, mode=0o755)
    (root / "fragments").mkdir(mode=0o777)
    os.chmod(root, 0o755)
    (root / "manifest.json").write_bytes(b"{}")
    os.chmod(root / "manifest.json", 0o644)
    (root / "fragments" / "frag-w0-000000000001.parquet").write_bytes(b"")
    os.chmod(root / "fragments" / "frag-w0-000000000001.parquet", 0o666)
    Store(root, "w1", 5).ensure_layout()
    assert loose_modes(root) == []
