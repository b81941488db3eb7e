"""A long-lived Delta table handle, opened afresh every ``REBASE_COMMITS`` versions.

delta-rs brings a handle forward (``update_incremental``, or a commit written through it)
by adding the new commits to the log segment the handle was opened with; it does not start
again from a newer checkpoint. A handle kept for hundreds of commits replays all of them on
every update and every commit: with deltalake 1.6.6 on a local table, a 100-row append
through a handle opened at version 0 took 25 ms at version 100 and 92-98 ms at 500-600,
against 32-38 ms throughout through a handle opened again every 50 commits. The table
writes a checkpoint every 100 commits (the default interval), so a handle opened again
after as many starts from a checkpoint at most 100 commits old.
"""

from __future__ import annotations

from collections.abc import Callable

from deltalake import DeltaTable

REBASE_COMMITS = 100


class Handle:
    """``open_()`` (None: no such table yet), kept and brought forward; not thread-safe."""

    def __init__(self, open_: Callable[[], DeltaTable | None]) -> None:
        self._open = open_
        self._table: DeltaTable | None = None
        self._base = 0  # the version it was opened at

    def latest(self) -> DeltaTable | None:
        """The handle at the table's latest version."""
        if self._table is not None:
            self._table.update_incremental()
        return self.current()

    def current(self) -> DeltaTable | None:
        """The handle at the version it is at (its own commits included), opened again at
        the latest version once it is ``REBASE_COMMITS`` past the one it was opened at."""
        if self._table is None or self._table.version() - self._base >= REBASE_COMMITS:
            self._table = self._open()
            self._base = 0 if self._table is None else self._table.version()
        return self._table
