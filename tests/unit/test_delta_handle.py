"""A long-lived Delta table handle: brought to the latest version, and opened again (from
the newest checkpoint) once it is ``REBASE_COMMITS`` versions past the one it was opened at."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from service.storage import delta_handle
from service.storage.delta_handle import Handle


def append(uri: str, n: int) -> None:
    write_deltalake(uri, pl.DataFrame({"n": [n]}), mode="append")


def test_a_handle_follows_the_table_and_is_opened_again_every_rebase_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delta_handle, "REBASE_COMMITS", 3)
    uri = str(tmp_path / "t")
    opened: list[DeltaTable] = []

    def open_() -> DeltaTable | None:
        if not (tmp_path / "t").exists():
            return None
        opened.append(DeltaTable(uri))
        return opened[-1]

    handle = Handle(open_)
    assert handle.latest() is None  # no table yet: asked again next time
    append(uri, 0)  # version 0
    first = handle.latest()
    assert first is not None
    assert len(opened) == 1
    for n in (1, 2):
        append(uri, n)
        assert handle.latest() is first  # brought forward, not opened again
        assert first.version() == n
    append(uri, 3)  # three versions past the one it was opened at
    again = handle.latest()
    assert again is not first
    assert again is not None
    assert again.version() == 3
    assert len(opened) == 2
    assert handle.current() is again  # no newer version: kept
