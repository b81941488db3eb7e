"""Small durable-file helpers shared by the WAL, fragments and the manifest."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it over ``final`` and fsync the directory."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def unlink_quietly(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        fsync_dir(paths[0].parent)


def publish_new(tmp: Path, final: Path) -> None:
    """Like ``replace_atomically`` but never over an existing file (``FileExistsError``)."""
    fsync_path(tmp)
    try:
        os.link(tmp, final)  # atomic, and fails where a rename would overwrite
    finally:
        tmp.unlink()
    fsync_dir(final.parent)


def is_held(lock: FileLock) -> bool:
    """Whether another holder has ``lock`` (tested without waiting, released at once)."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False
