"""Per-slot partial aggregates of de-duplicated rows: what a rollup file stores and what
a query merges, computed one way for both.

A partial is, per UTC slot (a minute, or a second for ``1s`` series) and device (and user,
for a rollup), the ``sum`` and ``count`` of its readings, and with ``extremes`` their
``min`` and ``max``: enough to give a slot's mean or total, and to merge slots into wider
buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


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
