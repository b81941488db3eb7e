"""Records: the msgspec path takes a body only when the record-by-record path keeps it whole,
and then yields the same rows."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from service import records
from service.text import plain_text

MAX_BATCH = 5
metric_values = {
    "heart_rate": st.one_of(st.floats(25, 225), st.integers(25, 225)),
    "steps": st.one_of(
        st.integers(-2, 100_002), st.floats(-2, 100_002), st.integers(0, 9).map(float)
    ),
    "calories": st.one_of(st.floats(-1, 10_001), st.integers(-1, 10_001)),
}
odd_values = st.one_of(
    st.none(), st.booleans(), st.text(max_size=3), st.floats(allow_nan=False), st.just([])
)
good_ids = {
    "user_id": st.one_of(st.text(min_size=1, max_size=3), st.integers(-(2**70), 2**70)),
    "device_id": st.text(min_size=1, max_size=3),
    "timestamp": st.sampled_from(["2024-01-15T10:00:00Z", "2024-01-15 10:00:00.5+02:00"]),
}
odd_ids = st.sampled_from(
    [("user_id", ""), ("device_id", 7), ("timestamp", "2024-13-01T00:00:00Z"), ("x", 1)]
)
record = st.tuples(
    st.fixed_dictionaries(
        good_ids,
        optional={name: st.one_of(v, v, v, odd_values) for name, v in metric_values.items()},
    ),
    st.lists(odd_ids, max_size=1),
).map(lambda t: {**t[0], **dict(t[1])})


@given(
    st.lists(st.one_of(record, record, record, st.integers()), max_size=MAX_BATCH + 1),
    st.booleans(),
)
def test_the_fast_path_agrees_with_the_slow_one(items, ascii_only) -> None:
    # raw UTF-8 and DEL (ensure_ascii=False) as well as escapes: plain_text judges both
    bodies = [json.dumps(doc, ensure_ascii=ascii_only) for doc in (items, {"readings": items})]
    for body in (text.encode("utf-8", "surrogatepass") for text in bodies):
        decoded = records._decode(body)
        fast = records._parse(decoded, plain_text(body)) if decoded is not None else None
        slow = records._validate_slowly(body, MAX_BATCH + 1)
        if fast is not None:
            assert slow.errors == []
            assert fast.rows == slow.rows
            assert fast.total == slow.total == len(items)
        elif slow.total and not slow.errors and not any(map(_float_steps, items)):
            # only whole steps written as floats (40.0) are left to the slow path
            raise AssertionError(f"the fast path refused a valid body: {body!r}")
        assert slow.accepted + slow.rejected == slow.total
        assert slow.rejected == len({e["index"] for e in slow.errors})


def _float_steps(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("steps"), float)
