"""Per-slot partial aggregates of de-duplicated rows: what a rollup file stores and what
a query merges, computed one way for both; and the spanned partials of rows not
de-duplicated yet (see ``query.minutes``), which a merge keeps beside a level-1 file.

A partial is, per UTC slot (a minute, or a second for ``1s`` series) and device (and user,
for a rollup), the ``sum`` and ``count`` of its readings, and with ``extremes`` their
``min`` and ``max``: enough to give a slot's mean or total, and to merge slots into wider
buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from service.schema import ROLLUP_SCHEMA, ROW_SCHEMA

# the columns of a source's partials: ROLLUP_SCHEMA (without the user) plus the spans
SPANNED: dict[str, pl.DataType] = {
    **{k: v for k, v in ROLLUP_SCHEMA.items() if k != "user_id"},
    "lo": pl.Int64(),
    "hi": pl.Int64(),
    "clean": pl.Boolean(),
}
# a file's spanned partials, every user's: what ``file_partials`` gives and a spans file holds
SPANS_SCHEMA: dict[str, pl.DataType] = {"user_id": pl.String(), **SPANNED}


def partials(
    rows: pl.LazyFrame,
    by: Sequence[str] = ("device_id",),
    *,
    extremes: bool = False,
    every: str = "1m",
    name: str = "minute",
) -> pl.LazyFrame:
    """``ROW_SCHEMA`` rows -> per (``name``, ``*by``): ``sum``, ``count`` [, ``min``, ``max``]."""
    value = pl.col("value")
    aggs = [value.sum().alias("sum"), pl.len().cast(pl.Int64).alias("count")]
    if extremes:
        aggs += [value.min().alias("min"), value.max().alias("max")]
    return rows.group_by(pl.col("ts").dt.truncate(every).alias(name), *by).agg(aggs)


def spanned(rows: pl.LazyFrame, by: Sequence[str] = ()) -> pl.LazyFrame:
    """``ROW_SCHEMA`` rows (not de-duplicated) -> per (``*by``, device, minute) partials with
    spans, sorted by ``by``, minute and device."""
    ts, value = pl.col("ts"), pl.col("value")
    keys = [*by, "device_id", ts.dt.truncate("1m").alias("minute")]
    return (
        rows.group_by(keys)
        .agg(
            value.sum().alias("sum"),
            pl.len().cast(pl.Int64).alias("count"),
            value.min().alias("min"),
            value.max().alias("max"),
            ts.min().dt.epoch("ms").alias("lo"),
            ts.max().dt.epoch("ms").alias("hi"),
            (ts.n_unique() == pl.len()).alias("clean"),
        )
        .sort(*by, "minute", "device_id")
    )


def rollup(rows: pl.DataFrame) -> pl.DataFrame:
    """De-duplicated rows -> ``ROLLUP_SCHEMA`` rows sorted by (user_id, minute)."""
    return (
        partials(rows.lazy(), ("user_id", "device_id"), extremes=True)
        .select(pl.col(name).cast(dtype) for name, dtype in ROLLUP_SCHEMA.items())
        .sort("user_id", "minute", "device_id")
        .collect()
    )


def spans_of(rows: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Every user's spanned partials of ``rows`` (``SPANS_SCHEMA``), sorted by user."""
    return spanned(rows.lazy(), ("user_id",)).collect()


def file_partials(path: Path) -> pl.DataFrame:
    """Every user's spanned partials of one fragment file (``SPANS_SCHEMA``), sorted by user."""
    return spans_of(pl.scan_parquet(path, schema=ROW_SCHEMA))
