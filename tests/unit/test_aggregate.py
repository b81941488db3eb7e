"""The Polars plan against the plain-Python reference on generated data."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import expected_series

from service.query.aggregate import combine, dedupe, priority_partials, select
from service.query.buckets import Shape, widen
from service.schema import HEART_RATE, ROW_SCHEMA

PRIORITY = {"device_a": 1, "device_b": 2}
BASE = 1_705_312_800_000  # 2024-01-15T10:00:00Z

readings_st = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["device_a", "device_b", "watch_x", "ring_c"]),
        # few distinct instants so that duplicates and collisions are common
        st.integers(0, 40).map(lambda k: BASE + k * 7_500 + (k % 3)),
        st.integers(30, 220).map(float) | st.floats(30, 220, allow_nan=False),
    ),
    max_size=120,
)


def run(readings, user, start, end, scope="bucket", device=None):
    frame = pl.DataFrame(
        {
            "user_id": [r[0] for r in readings],
            "device_id": [r[1] for r in readings],
            "ts": [r[2] for r in readings],
            "value": [r[3] for r in readings],
            "seq": list(range(len(readings))),
        },
        schema=ROW_SCHEMA,
    )
    rows = dedupe(select(frame.lazy(), user, start, end, device))
    priority = None if device else PRIORITY
    parts = priority_partials(rows, priority, scope)
    if parts.height == 0:
        return []
    out = widen(parts, Shape(), HEART_RATE, priority)
    out = out.with_columns(pl.col("bucket").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return [(m, v, d) for m, d, v in out.select("bucket", "device_id", "value").rows()]


def same(got, want):
    assert [(m, d) for m, _, d in got] == [(m, d) for m, _, d in want]
    assert [v for _, v, _ in got] == pytest.approx([v for _, v, _ in want], rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    readings=readings_st,
    scope=st.sampled_from(["bucket", "timestamp"]),
    window=st.tuples(st.integers(-2, 45), st.integers(1, 45)),
)
def test_plan_matches_reference(readings, scope, window) -> None:
    start = BASE + window[0] * 7_500
    end = start + window[1] * 7_500
    same(
        run(readings, "u1", start, end, scope),
        expected_series(readings, "u1", start, end, PRIORITY, scope),
    )


@settings(max_examples=60, deadline=None)
@given(readings=readings_st, device=st.sampled_from(["device_a", "watch_x"]))
def test_device_filter_matches_reference(readings, device) -> None:
    end = BASE + 3_600_000
    same(
        run(readings, "u1", BASE, end, device=device),
        expected_series(readings, "u1", BASE, end, PRIORITY, device_id=device),
    )


def test_shuffled_input_gives_the_same_series() -> None:
    readings = [
        ("u1", d, BASE + k * 1000, 60.0 + k) for k in range(120) for d in ("device_b", "watch_x")
    ]
    forward = run(readings, "u1", BASE, BASE + 3_600_000)
    backward = run(list(reversed(readings)), "u1", BASE, BASE + 3_600_000)
    assert forward == backward
    assert [m for m, _, _ in forward] == ["2024-01-15T10:00:00Z", "2024-01-15T10:01:00Z"]


def frame_of(readings, seq0=0):
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in readings],
            "device_id": [r[1] for r in readings],
            "ts": [r[2] for r in readings],
            "value": [r[3] for r in readings],
            "seq": [seq0 + s for s in range(len(readings))],
        },
        schema=ROW_SCHEMA,
    )


@settings(max_examples=100, deadline=None)
@given(old=readings_st, new=readings_st, new_is_later=st.booleans())
def test_combine_equals_a_full_dedupe(old, new, new_is_later) -> None:
    # settled rows are unique per identity; fresh rows may be newer or (replayed) older
    settled = dedupe(frame_of(old, 1000).lazy())
    fresh = frame_of(new, 5000 if new_is_later else 0).lazy()
    got = combine(settled, fresh).collect().sort("device_id", "ts", "user_id")
    want = dedupe(pl.concat([settled, fresh])).collect().sort("device_id", "ts", "user_id")
    assert got.to_dicts() == want.to_dicts()
