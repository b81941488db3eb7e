"""The Delta store: flushed rows go to one Delta Lake table that every machine shares.

Table (``HR_TABLE_URI``, a local path or ``s3://bucket/prefix``): columns ``user_id`` str,
``device_id`` str, ``ts`` timestamp[us, UTC], ``value`` f64, ``seq`` i64, partitioned by
``metric`` (str) and ``day`` (the reading's UTC date), so a query lists one metric's days.
Files are appended in arrival order; Delta's log (``_delta_log/<version>.json``, created
put-if-absent) is the catalogue, readable by any Delta reader.

Exactly once: each commit carries the app transaction ``<machine>-<worker>`` -> the
highest ``seq`` of that worker's WAL it holds; ``seq`` only grows within a WAL, so a row
of that WAL is in the table iff its ``seq`` is at most that version. A flush retried after
an unclear failure, or a dead worker's WAL replayed after a crash between the commit and
the segments' deletion, commits only the rows above it. ``<machine>`` is a random id kept
in ``<data dir>/machine-id``; creating the table and the start-up check of its store are in
``delta_setup``.

The WAL, buffer and the local manifest stay in the machine's data directory. Erasures
are shared through the table's ``_erasures`` (see ``delta_erasure``): an erase lists its
tombstone there as well as in the local manifest; every worker imports the recent ones
others began into its machine's manifest at each upkeep (so its buffered rows are hidden
and its flushes drop them), and leaves out of every flush the rows under any of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from service.errors import Unavailable
from service.schema import DAY_MS, ROW_SCHEMA
from service.storage import delta_erasure, delta_rollups
from service.storage.delta_handle import Handle
from service.storage.delta_log import TableLog
from service.storage.delta_setup import TableRefused, check_put_if_absent, create_table, machine_id
from service.storage.fragments import FragmentInfo
from service.storage.manifest import Snapshot
from service.storage.store import SharedTable, Store, TableDay
from service.storage.tombstones import Tombstone, live

PARTITIONS = ["metric", "day"]
# the files' columns: Delta timestamps are microseconds
FILE_SCHEMA: dict[str, pl.DataType] = {**ROW_SCHEMA, "ts": pl.Datetime("us", "UTC")}
TABLE_SCHEMA: dict[str, pl.DataType] = {**FILE_SCHEMA, "metric": pl.String(), "day": pl.Date()}
# each worker start adds an app transaction; readers may forget one unused this long (a WAL
# left unreplayed longer would be committed again: queries de-duplicate it, as they do rows)
TRANSACTION_RETENTION = "interval 30 days"
LAST_DAY_MS = 253_402_214_400_000  # 9999-12-31T00:00:00Z, the last day a date can hold
# an erase begun on another machine is listed in this one's manifest if this recent: half
# the time a done tombstone stays listed (``tombstones.KEEP_S``), so it is never listed twice
IMPORT_S = 300.0
SHARED_REFRESH_S = 1.0  # a flush reads the shared tombstones again at most this often
DELETE_TRIES = 5  # a DELETE that conflicts with a concurrent commit is tried again


class DeltaStore(Store):
    """``Store`` whose ``publish`` appends to the shared table and whose ``table_rows``
    reads it; everything else (WAL, tombstones, local manifest) as the local store."""

    def __init__(
        self,
        root: Path,
        worker: str,
        lock_timeout_s: float,
        uri: str,
        options: Mapping[str, str],
    ) -> None:
        super().__init__(root, worker, lock_timeout_s)
        self.uri = uri.rstrip("/")
        self._options = dict(options) or None
        self._machine = ""
        # one handle to commit through, one to read through: a slow commit (a second or more
        # on a contended object store) never holds up a query's listing
        self._writer = Handle(self._open)
        self._write_lock = threading.Lock()
        self._reader = Handle(self._open)
        self._read_lock = threading.Lock()
        self._rollups = delta_rollups.Rollups(self.uri, self._options)
        # the shared tombstones, once there are any
        self._erasures = Handle(lambda: delta_erasure.open_shared(self.uri, self._options))
        self._erasures_read = 0.0  # monotonic s
        self._shared: tuple[Tombstone, ...] = ()
        self._erasures_lock = threading.Lock()

    def ensure_layout(self) -> None:
        """The local layout, this machine's id, the table (created if missing) and, on S3,
        proof that the store refuses a second write of one key."""
        super().ensure_layout()
        self._machine = machine_id(self.root)
        try:
            create_table(
                self.uri,
                pl.DataFrame(schema=TABLE_SCHEMA),
                self._options,
                PARTITIONS,
                {"delta.setTransactionRetentionDuration": TRANSACTION_RETENTION},
            )
            if self.uri.startswith("s3://"):
                check_put_if_absent(self.uri, self._options)
        except (DeltaError, OSError) as exc:
            raise TableRefused(f"the table at {self.uri} cannot be used: {exc}") from exc

    def app_id(self, owner: str) -> str:
        """The app transaction id of ``owner``'s WAL (a worker id of this machine)."""
        if not self._machine:
            self._machine = machine_id(self.root)
        return f"{self._machine}-{owner}"

    def publish(
        self, frames: dict[str, pl.DataFrame], owner: str | None = None
    ) -> list[FragmentInfo]:
        """Append the rows of ``frames`` (all from ``owner``'s WAL, this worker's by
        default) that the table lacks, in one commit; erased users' rows are left out."""
        last = max((int(f["seq"].max()) for f in frames.values() if f.height), default=0)  # type: ignore[arg-type]
        if not last:
            return []
        erased = delta_erasure.merged(
            self.manifest.read().tombstones, self.shared_erasures(SHARED_REFRESH_S)
        )
        rows = pl.concat(
            [
                live(frame, erased).with_columns(metric=pl.lit(metric))
                for metric, frame in frames.items()
            ]
        )
        app_id = self.app_id(owner or self.worker)
        with self._write_lock:
            table = self._refreshed(self._writer)
            done = table.transaction_version(app_id) or 0
            if last <= done:
                return []  # committed already: the commit's answer was lost, not the commit
            rows = _table_frame(rows.filter(pl.col("seq") > done))
            write_deltalake(
                table,
                rows,
                mode="append",
                partition_by=PARTITIONS,
                commit_properties=CommitProperties(
                    app_transactions=[
                        Transaction(app_id=app_id, version=last, last_updated=_now_ms())
                    ]
                ),
            )
        return []

    def table_rows(
        self, metric: str, start_ms: int, end_ms: int, user_id: str | None = None
    ) -> pl.LazyFrame | None:
        """Rows of ``metric`` in the table's files for the UTC days of ``[start_ms, end_ms)``
        (``ROW_SCHEMA``, not yet filtered to the range or to ``user_id``)."""
        predicate = _days(metric, start_ms, end_ms)
        try:
            with self._read_lock:
                uris = self._refreshed(self._reader).file_uris(file_pruning_predicate=predicate)
        except (DeltaError, OSError) as exc:
            raise Unavailable(f"the table at {self.uri} could not be read: {exc}") from exc
        return self.scan_table(uris) if uris else None

    def table_sources(
        self, metric: str, start_ms: int, end_ms: int, user_id: str
    ) -> tuple[pl.LazyFrame | None, list[TableDay]]:
        """The rows of files no rollup covers, and the days a rollup covers (``delta_rollups``)
        with ``user_id``'s rollup rows."""
        predicate = _days(metric, start_ms, end_ms)
        try:
            with self._read_lock:
                uris = self._refreshed(self._reader).file_uris(file_pruning_predicate=predicate)
            if not uris:
                return None, []
            days = self._rollups.days(predicate, user_id, uris)
        except (DeltaError, OSError) as exc:
            raise Unavailable(f"the table at {self.uri} could not be read: {exc}") from exc
        settled = {uri for day in days for uri in day.files}
        loose = [uri for uri in uris if uri not in settled]
        return (self.scan_table(loose) if loose else None), days

    def scan_table(self, uris: list[str]) -> pl.LazyFrame:
        scan = pl.scan_parquet(
            uris,
            schema=FILE_SCHEMA,
            hive_partitioning=False,
            storage_options=self._options,
        )
        return scan.with_columns(pl.col("ts").cast(ROW_SCHEMA["ts"]))

    def table_retained(
        self, metric: str, start_ms: int, end_ms: int, user_id: str
    ) -> tuple[int, pl.DataFrame] | None:
        """``user_id``'s rollup rows of the days of ``[start_ms, end_ms)`` past raw retention,
        and the end of the last such day (``delta_rollups.retained``)."""
        try:
            return self._rollups.retained(_days(metric, start_ms, end_ms), user_id)
        except (DeltaError, OSError) as exc:
            raise Unavailable(f"the rollups of {self.uri} could not be read: {exc}") from exc

    def shared_table(self) -> SharedTable:
        return TableLog(self.uri, self._options, self.app_id(""), self.scan_table)

    def share_erasure(self, tomb: Tombstone) -> None:
        """List ``tomb`` in the table's shared tombstones."""
        try:
            delta_erasure.record(self.uri, self._options, [tomb])
        except (DeltaError, OSError) as exc:
            raise Unavailable(f"the erasure could not be shared at {self.uri}: {exc}") from exc

    def sync_erasures(self) -> None:
        """List in this machine's manifest the recent shared tombstones it lacks."""
        fresh = delta_erasure.recent(self.shared_erasures(0.0), time.time() - IMPORT_S)
        if not delta_erasure.missing(fresh, self.manifest.read().tombstones):
            return

        def add(current: Snapshot) -> tuple[Tombstone, ...]:
            new = {t.user_id: t for t in delta_erasure.missing(fresh, current.tombstones)}
            kept = tuple(t for t in current.tombstones if t.user_id not in new)
            return (*kept, *new.values())

        self.manifest.commit(tombstones=add)

    def scrub_table(self, stones: tuple[Tombstone, ...]) -> tuple[int, int]:
        """Share the tombstones of ``stones`` not yet shared (an erase cut short), then
        delete their rows from the table; (rows deleted, files rewritten)."""
        if not stones:
            return 0, 0
        lacking = delta_erasure.missing(stones, self.shared_erasures(0.0))
        try:
            delta_erasure.record(self.uri, self._options, lacking)
            with self._write_lock:
                for attempt in range(DELETE_TRIES):
                    table = self._refreshed(self._writer)
                    try:
                        found = delta_erasure.delete_rows(table, stones)
                        users = [t.user_id for t in stones]
                        delta_rollups.erase(self.uri, self._options, users)
                        return found
                    except CommitFailedError:
                        if attempt + 1 == DELETE_TRIES:
                            raise
        except (DeltaError, OSError) as exc:
            raise Unavailable(f"erased rows could not be deleted from {self.uri}: {exc}") from exc
        return 0, 0  # not reached: the last try returned or raised

    def shared_erasures(self, max_age_s: float) -> tuple[Tombstone, ...]:
        """The table's shared tombstones, read again when older than ``max_age_s``."""
        with self._erasures_lock:
            if time.monotonic() - self._erasures_read < max_age_s:
                return self._shared
            erasures = self._erasures.latest()
            if erasures is not None:
                self._shared = delta_erasure.shared(erasures, self._options)
            self._erasures_read = time.monotonic()
            return self._shared

    def _open(self) -> DeltaTable:
        return DeltaTable(self.uri, storage_options=self._options)

    @staticmethod
    def _refreshed(handle: Handle) -> DeltaTable:
        """``handle`` at the table's latest version (the caller holds its lock)."""
        table = handle.latest()
        assert table is not None  # ``_open`` raises rather than answer None
        return table


def _table_frame(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(
        *(pl.col(name).cast(dtype) for name, dtype in FILE_SCHEMA.items()),
        pl.col("metric"),
        pl.col("ts").dt.date().alias("day"),
    )


def _days(metric: str, start_ms: int, end_ms: int) -> list[tuple[str, str, str]]:
    """The partitions of ``metric`` for the UTC days of ``[start_ms, end_ms)``."""
    first, last = _day(start_ms), _day(max(start_ms, end_ms - 1))
    return [("metric", "=", metric), ("day", ">=", first), ("day", "<=", last)]


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _day(ms: int) -> str:
    ms = min(max(ms, 0), LAST_DAY_MS)  # "from the start" and "forever" are 0 and 2**62
    return datetime.fromtimestamp(ms // DAY_MS * DAY_MS / 1000, UTC).date().isoformat()
