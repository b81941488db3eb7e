"""Quarantine: a listed file that cannot be read leaves the manifest instead of failing
every query and compaction pass that touches it.

Layout: ``quarantine/<name>`` (the file as it was, moved out of ``fragments/``) and
``quarantine/<name>.reason`` (one line: when, and the error that condemned it). A day
file's entry leaves the manifest with its rollup companion (both are moved); an
unreadable rollup alone costs only the rollup: its day file stays listed, read raw.

Files are probed only after a read failed, so the hot path is unchanged. A probe that
finds a file missing condemns it only while the manifest still lists it: a file that
compaction retired and deleted under a long query is a reason to retry, not corruption.
The ``.reason`` file is created exclusively, so when several workers find the same file
only one of them moves and counts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from service.schema import ROLLUP_SCHEMA, ROW_SCHEMA
from service.storage.files import fsync_dir, open_private, private_dir
from service.storage.fragments import FragmentInfo, rollup_name
from service.storage.store import Store

log = logging.getLogger("service.storage")

DIRECTORY = "quarantine"
# what a failed Parquet read raises: a truncated file is a ComputeError ("File out of
# specification"), a missing one FileNotFoundError; garbled pages may make Polars panic
READ_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    OSError,
    pl.exceptions.PanicException,
)


def unreadable(store: Store, entries: Iterable[FragmentInfo]) -> dict[str, str]:
    """The files of ``entries`` (day files and rollups) that cannot be read, with why.

    Footers first (cheap, and what truncation breaks), then whole files only if every
    footer was fine.
    """
    files = [
        (name, schema)
        for f in entries
        for name, schema in [(f.name, ROW_SCHEMA), (rollup_name(f.name), ROLLUP_SCHEMA)][
            : 2 if f.rollup else 1
        ]
    ]
    for deep in (False, True):
        bad = {
            name: why
            for name, schema in files
            if (why := _probe(store.fragment_dir / name, schema, deep)) is not None
        }
        if missing := {name for name, why in bad.items() if why == _MISSING}:
            listed = {name for f in store.manifest.read().fragments for name in f.files}
            bad = {name: why for name, why in bad.items() if name not in missing - listed}
        if bad:
            return bad
    return {}


_MISSING = "missing, still listed in the manifest"


def _probe(path: Path, schema: dict[str, pl.DataType], deep: bool) -> str | None:
    try:
        if deep:
            pl.read_parquet(path, schema=schema)
        else:
            pl.read_parquet_schema(path)
    except FileNotFoundError:
        return _MISSING
    except OSError:
        return None  # not the file's fault (no descriptors, no memory): not attributed
    except READ_ERRORS as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0]
    return None


def isolate(store: Store, bad: dict[str, str]) -> list[str]:
    """Move the ``bad`` files (and companions) to the quarantine directory and drop what
    they held from the manifest in one commit; the names this call moved, to be counted."""
    directory = store.root / DIRECTORY
    private_dir(directory)
    remove, unroll, reasons = [], [], dict(bad)
    for f in store.manifest.read().fragments:
        if f.name in bad:
            remove.append(f.name)
            if f.rollup:
                reasons.setdefault(rollup_name(f.name), f"its day file {f.name} is unreadable")
        elif f.rollup and rollup_name(f.name) in bad:
            unroll.append(f.name)
    moved = [name for name, why in reasons.items() if _claim(store, directory, name, why)]
    if moved:
        fsync_dir(store.fragment_dir)
        fsync_dir(directory)
    # after the moves: a crash in between leaves a listed file missing, which the next
    # read condemns again (the moved copy is already kept), never an orphan swept away
    store.manifest.commit(remove=remove, unroll=unroll)
    for name in moved:
        log.error(
            "quarantined %s: %s",
            name,
            reasons[name],
            extra={"fields": {"event": "quarantine", "file": name, "reason": reasons[name]}},
        )
    return moved


def _claim(store: Store, directory: Path, name: str, why: str) -> bool:
    """Record why ``name`` is quarantined and move it; False if another process did."""
    try:
        fd = open_private(directory / f"{name}.reason", os.O_WRONLY | os.O_EXCL)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out.write(f"{stamp} {why}\n")
    with contextlib.suppress(FileNotFoundError):  # a listed file that is gone: noted only
        os.rename(store.fragment_dir / name, directory / name)
    return True


def quarantined(root: Path) -> dict[str, str]:
    """The quarantined files under data root ``root``, with why (as recorded)."""
    directory = root / DIRECTORY
    if not directory.is_dir():
        return {}
    found: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        name = path.name.removesuffix(".reason")
        if path.name.endswith(".reason"):
            with contextlib.suppress(OSError):
                found[name] = path.read_text().strip()
        found.setdefault(name, "")
    return found


def merge_readable(
    store: Store, files: list[FragmentInfo], merge: Callable[[list[FragmentInfo]], None]
) -> int:
    """``merge(files)``; on a read error, quarantine the inputs that cannot be read and
    merge the rest; the number of files quarantined. An error no input is to blame for
    (and that no change of the manifest explains) is raised."""
    count = 0
    while files:
        try:
            merge(files)
            return count
        except READ_ERRORS:
            bad = unreadable(store, files)
            listed = {f.name for f in store.manifest.read().fragments}
            if not bad and all(f.name in listed for f in files):
                raise
        if bad:
            count += len(isolate(store, bad))
            listed = {f.name for f in store.manifest.read().fragments}
        # what another process retired or quarantined meanwhile is not merged here either
        files = [f for f in files if f.name in listed and f.name not in bad]
    return count
