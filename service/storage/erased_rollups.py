"""Erasure in the rolled-up days: rollup files of days past raw retention hold per-minute
rows of every user, with no ingest sequence. Such a day is older than any erase (retention
drops late readings), so every row of an erased user there goes: each file holding one is
replaced by a copy without them, in one manifest change (see ``Manifest.swap_rollups``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import polars as pl

from service.schema import ROLLUP_SCHEMA
from service.storage.files import unlink_quietly
from service.storage.fragments import FragmentInfo, rollup_name, write_rollup
from service.storage.store import Store
from service.storage.tombstones import Tombstone


def scrub(store: Store, stones: Iterable[Tombstone]) -> tuple[set[str], int]:
    """(names of the rolled-up entries now free of the erased users, files rewritten)."""
    users = {t.user_id for t in stones}
    snapshot = store.manifest.read()
    clean, swaps = set(), {}
    for r in snapshot.rollups:
        mine = [u for u in users if r.holds(u)]
        path = store.fragment_dir / r.name
        frame = pl.read_parquet(path, schema=ROLLUP_SCHEMA) if mine else None
        kept = None if frame is None else frame.filter(~pl.col("user_id").is_in(mine))
        if frame is None or kept is None or kept.height == frame.height:
            clean.add(r.name)
            continue
        raw = store.new_name()  # the rollup of a raw file that no longer exists
        write_rollup(kept, store.fragment_dir, replace(r, name=raw))
        swaps[r.name] = replace(r, name=rollup_name(raw))
    if swaps:
        try:
            store.manifest.swap_rollups(swaps)
        except BaseException:
            unlink_quietly([store.fragment_dir / new.name for new in swaps.values()])
            raise
        clean.update(new.name for new in swaps.values())
    return clean, len(swaps)


def holders(rollups: Iterable[FragmentInfo], user_id: str) -> list[str]:
    return [r.name for r in rollups if r.holds(user_id)]
