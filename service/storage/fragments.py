"""Fragments: immutable Parquet files, one writer each.

Name: ``fragments/frag-<worker>-<seq:012d>.parquet``; ``seq`` strictly increases per
worker and worker ids are never reused, so no two writers ever pick the same name.
Columns: ``ROW_SCHEMA`` (user_id, device_id, ts datetime[ms, UTC], value f64, seq i64),
rows sorted by (user_id, ts). A fragment is written under a temporary name, fsynced and
renamed into place; it is visible to queries only once the manifest lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from service.storage.files import replace_atomically


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    name: str
    metric: str
    rows: int
    min_ts: int  # epoch ms, inclusive
    max_ts: int  # epoch ms, inclusive


def fragment_name(worker: str, seq: int) -> str:
    return f"frag-{worker}-{seq:012d}.parquet"


def publish(frame: pl.DataFrame, directory: Path, name: str, metric: str) -> FragmentInfo:
    """Write ``frame`` as the fragment ``name``, durably, and describe it."""
    final = directory / name
    tmp = directory / f".{name}.tmp"
    frame = frame.sort("user_id", "ts")
    frame.write_parquet(tmp, statistics=True, row_group_size=100_000)
    replace_atomically(tmp, final)
    low, high = frame.select(
        pl.col("ts").dt.epoch("ms").min().alias("low"), pl.col("ts").dt.epoch("ms").max()
    ).row(0)
    return FragmentInfo(name, metric, frame.height, int(low), int(high))
