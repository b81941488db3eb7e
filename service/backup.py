"""``ops/maint backup``: a consistent, private copy of a (running) data directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

from service.storage.compaction import compaction_lock
from service.storage.files import DIR_MODE, copy_private, private_dir
from service.storage.manifest import Manifest
from service.storage.store import Store
from service.storage.wal import list_segments


class BackupError(Exception):
    """The backup cannot be made as asked (its destination exists)."""


def backup(store: Store, dest: Path, timeout_s: float = 600.0) -> tuple[int, int]:
    """Copy a consistent snapshot of a (running) data dir into the new directory ``dest``.

    Holding the compaction lock keeps every listed fragment on disk; fragments are
    immutable, so the manifest read under it and the files it lists form one state.
    WAL segments are copied after, so readings acknowledged meanwhile are kept too (a
    torn tail in a copy is not replayed). Returns (fragments, WAL segments) copied.
    """
    try:
        dest.mkdir(mode=DIR_MODE, parents=True, exist_ok=False)
    except FileExistsError:
        raise BackupError(f"{dest} already exists: back up into a new directory") from None
    for directory in (dest, dest / "fragments", dest / "wal"):
        private_dir(directory)
    with compaction_lock(store).acquire(timeout=timeout_s):
        manifest = store.manifest.path.read_bytes() if store.manifest.path.exists() else None
        snapshot = store.manifest.read()
        for name in snapshot.listed():
            copy_private(store.fragment_dir / name, dest / "fragments" / name)
        copied = 0
        for segments in list_segments(store.wal_dir).values():
            for path in segments:
                with contextlib.suppress(FileNotFoundError):  # flushed meanwhile
                    copy_private(path, dest / "wal" / path.name)
                    copied += 1
    if manifest is not None:
        # keep only the listed entries: the retired ones were not copied
        restored = Manifest(dest / "manifest.json", 10)
        restored.restore(snapshot.fragments, snapshot.rollups)
    return len(snapshot.fragments), copied
