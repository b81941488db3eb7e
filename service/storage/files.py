"""Small durable-file helpers shared by the WAL, fragments and the manifest.

Health data is private: every directory the service creates is ``0700`` and every file
``0600``, whatever the process umask (a umask only removes bits, so creating with these
modes is enough for new files; existing ones are tightened explicitly).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) if missing; make it ``0700`` either way."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)  # an existing directory keeps its mode otherwise


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating ``path`` as ``0600``; a file that already existed is made
    ``0600`` too."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_private(path: Path) -> BinaryIO:
    """A new or truncated ``0600`` file, open for writing (Polars writers take it)."""
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "wb")


def write_private(path: Path, data: bytes) -> None:
    with create_private(path) as f:
        f.write(data)


def copy_private(source: Path, dest: Path) -> None:
    """Copy a file's bytes (not its mode) into the new ``0600`` file ``dest``."""
    with (
        source.open("rb") as src,
        os.fdopen(open_private(dest, os.O_WRONLY | os.O_EXCL), "wb") as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 20)


def private_lock(path: Path) -> FileLock:
    """A ``FileLock`` whose file, when this lock creates it, is ``0600``."""
    return FileLock(path, mode=FILE_MODE)


def tighten(root: Path) -> None:
    """Make every directory under ``root`` ``0700`` and every file ``0600`` (data written
    before modes were enforced, or copied in by hand)."""
    for directory, _dirs, files in os.walk(root):
        _chmod_if_loose(Path(directory), DIR_MODE)
        for name in files:
            _chmod_if_loose(Path(directory) / name, FILE_MODE)


def _chmod_if_loose(path: Path, mode: int) -> None:
    try:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass  # deleted meanwhile (a flushed segment, a retired fragment)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(path: Path) -> None:
    """fsync ``path`` and make it ``0600``: whatever wrote it (Polars opens its own
    files), no file is put in place readable by others."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp: Path, final: Path) -> None:
    """Seal ``tmp``, rename it over ``final`` and fsync the directory."""
    seal(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def unlink_quietly(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        fsync_dir(paths[0].parent)


def link_new(tmp: Path, final: Path) -> None:
    """Like ``replace_atomically`` but never over an existing file (``FileExistsError``)."""
    seal(tmp)
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
