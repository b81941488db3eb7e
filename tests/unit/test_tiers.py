"""Tiers: append-only rows as a few immutable frames."""

from __future__ import annotations

import polars as pl

from service.tiers import Tiers


def test_rows_stay_in_order_in_few_frames_and_old_frames_stay_the_same_objects() -> None:
    tiers = Tiers()
    assert tiers.whole() is None
    n = 0
    for size in [5] * 200 + [1_000, 3] + [7] * 50:
        tiers.append(pl.DataFrame({"i": list(range(n, n + size))}))
        n += size
        assert len(tiers.frames) <= 12  # O(log n): 1,355 rows
    whole = tiers.whole()
    assert whole is not None
    assert whole["i"].to_list() == list(range(n))
    assert tiers.rows == n
    big = tiers.frames[0]
    tiers.append(pl.DataFrame({"i": [n]}))
    assert tiers.frames[0] is big  # a small append leaves the big frame alone
