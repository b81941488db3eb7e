"""Setting a shared Delta table up: creating it (every worker of every machine races to),
proving its object store refuses a second write of one key, and this machine's id.

Probe: ``<table>/_put_if_absent_check``, a one-column table each worker commits to twice
at start; the second commit must be refused, else the store would let machines overwrite
each other's commits and the service does not start (``TableRefused``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from service.storage.files import create_private, link_new

CHECK_TABLE = "_put_if_absent_check"
MACHINE_FILE = "machine-id"


class TableRefused(RuntimeError):
    """The table's object store cannot be written safely: the service does not start."""


def create_table(
    uri: str,
    frame: pl.DataFrame,
    options: dict[str, str] | None,
    partition_by: list[str] | None = None,
    configuration: Mapping[str, str | None] | None = None,
) -> None:
    """Create the empty table ``uri`` with ``frame``'s columns unless it exists (the
    workers of every machine race to do so at start)."""
    if DeltaTable.is_deltatable(uri, storage_options=options):
        return
    # CommitFailedError: another worker created it meanwhile (its version 0 won)
    with contextlib.suppress(CommitFailedError):
        write_deltalake(
            uri,
            frame.clear(),
            mode="ignore",
            partition_by=partition_by,
            configuration=configuration,
            storage_options=options,
        )


def check_put_if_absent(uri: str, options: dict[str, str] | None) -> None:
    """Raise ``TableRefused`` unless a second commit of one table version is refused:
    without put-if-absent, concurrent commits overwrite each other and rows are lost."""
    probe = f"{uri}/{CHECK_TABLE}"
    frame = pl.DataFrame({"started": [datetime.now(UTC)]})
    once = CommitProperties(max_commit_retries=0)
    create_table(probe, frame, options)
    for _ in range(5):
        first = DeltaTable(probe, storage_options=options)
        second = DeltaTable(probe, storage_options=options)  # the same version as first
        try:
            write_deltalake(first, frame, mode="append", commit_properties=once)
        except CommitFailedError:
            continue  # another worker's probe got there first: try again
        try:
            write_deltalake(second, frame, mode="append", commit_properties=once)
        except CommitFailedError:
            return
        raise TableRefused(
            f"the object store of {uri} accepted a second write of one Delta log entry: it "
            "ignores If-None-Match (put-if-absent), so machines would overwrite each "
            "other's commits; use a store that supports conditional writes"
        )
    raise TableRefused(f"the put-if-absent check at {probe} kept conflicting; not started")


def machine_id(root: Path) -> str:
    """This data directory's random id, created once (``MACHINE_FILE``)."""
    path = root / MACHINE_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    tmp = root / f"{MACHINE_FILE}.{os.getpid()}.tmp"
    with create_private(tmp) as f:
        f.write(secrets.token_hex(8).encode())
    with contextlib.suppress(FileExistsError):  # another worker's id won
        link_new(tmp, path)
    return path.read_text().strip()
