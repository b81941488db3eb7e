"""Following the shared Delta table's log (see ``delta``): its files at each new version,
and each new commit's added files with the machine that made it.

Cost per look: bringing the handle to the latest version (``update_incremental``: on S3
one listing of ``_delta_log/`` after the version held, when nothing changed), plus, for
``commits``, one read of ``_delta_log/<version:020d>.json`` per new version. A commit
is ``foreign`` when its app transactions (``<machine>-<worker>``, one per flush; see
``delta``) name another machine: compaction, erasure and retention commits carry none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import polars as pl
from deltalake import DeltaTable

from service.storage.delta_handle import Handle
from service.storage.store import Commit

# the parts of a log entry's actions read here (the others are ignored)
LOG_SCHEMA: dict[str, pl.DataType] = {
    "txn": pl.Struct({"appId": pl.String()}),
    "add": pl.Struct({"path": pl.String(), "partitionValues": pl.Struct({"metric": pl.String()})}),
}


class TableLog:
    """One follower of the table at ``uri``; ``app_prefix`` starts this machine's app
    transaction ids. Its methods are blocking and safe from several threads."""

    def __init__(
        self,
        uri: str,
        options: dict[str, str] | None,
        app_prefix: str,
        scan: Callable[[list[str]], pl.LazyFrame],
    ) -> None:
        self._uri = uri.rstrip("/")
        self._options = options
        self._prefix = app_prefix
        self._scan = scan
        self._handle = Handle(lambda: DeltaTable(self._uri, storage_options=self._options))
        self._lock = threading.Lock()

    def files(self, known: int) -> tuple[int, list[str] | None]:
        with self._lock:
            handle = self._latest()
            version = handle.version()
            return version, (None if version == known else handle.file_uris())

    def commits(self, after: int | None) -> tuple[int, list[Commit]]:
        with self._lock:
            version = self._latest().version()
        first = version + 1 if after is None else after + 1
        return version, [self._commit(v) for v in range(first, version + 1)]

    def scan(self, uris: list[str]) -> pl.LazyFrame:
        return self._scan(uris)

    def _commit(self, version: int) -> Commit:
        entry = pl.read_ndjson(
            f"{self._uri}/_delta_log/{version:020d}.json",
            schema=LOG_SCHEMA,
            storage_options=self._options,
        )
        apps = [t["appId"] for t in entry["txn"].drop_nulls().to_list()]
        added = tuple(
            (self._file_uri(a["path"]), a["partitionValues"]["metric"])
            for a in entry["add"].drop_nulls().to_list()
        )
        foreign = bool(apps) and not any(app.startswith(self._prefix) for app in apps)
        return Commit(version, foreign, added)

    def _file_uri(self, path: str) -> str:
        """The URI of the file at ``path`` (relative, URL-encoded as the log writes it)."""
        if "://" in path:
            return path  # an absolute path (a table that shares another's files)
        if "://" in self._uri:
            return f"{self._uri}/{unquote(path)}"
        return str(Path(self._uri).resolve() / unquote(path))

    def _latest(self) -> DeltaTable:
        """The handle at the table's latest version (caller holds the lock)."""
        table = self._handle.latest()
        assert table is not None  # opening a missing table raises
        return table
