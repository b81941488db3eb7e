"""The batch shortcut's parser accepts exactly the batches the route accepts whole."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from service.errors import InvalidInput, PayloadTooLarge
from service.schema import HEART_RATE, STEPS
from service.text import plain_text, printable
from service.validation import parse_batch, validate_batch

MAX_BATCH = 5
MAX_DAYS = 2
good = st.fixed_dictionaries(
    {
        "user_id": st.one_of(st.text(min_size=1, max_size=3), st.integers(-(2**70), 2**70)),
        "device_id": st.text(min_size=1, max_size=3),
        "timestamp": st.sampled_from(
            [
                "2024-01-15T10:00:00Z",
                "2024-01-15T10:00:00.25Z",
                "2024-01-15 10:00:00+02:00",
                "2024-01-16T23:59:59Z",
                "2024-01-17T00:00:00Z",
            ]
        ),
        "heart_rate": st.one_of(st.floats(30, 220), st.integers(30, 220)),
    }
)
# one field of a good reading replaced by something that may or may not be valid
odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.sampled_from(
        ["2024-01-15T10:00:60Z", "2024-13-01T00:00:00Z", "x" * 129, "a\x00b", "\ud800", "z\x85"]
    ),
)
GOOD = {"user_id": "0", "device_id": "0", "timestamp": "2024-01-15T10:00:00Z", "heart_rate": 30}
odd = st.tuples(
    good, st.sampled_from(["user_id", "device_id", "timestamp", "heart_rate", "extra"]), odd_values
).map(lambda t: {**t[0], t[1]: t[2]})
# a string the decoder takes but the timestamp parser refuses
bad_time = st.tuples(
    good,
    st.sampled_from(
        [
            "2024-01-15T10:00:60Z",
            "2024-13-01T00:00:00Z",
            "soon",
            "",
            "2024-02-01T00:00:00Z\x00garbage",
            "1969-12-31T23:59:59Z",
            "2101-01-01T00:00:00Z",
        ]
    ),
).map(lambda t: {**t[0], "timestamp": t[1]})
dropped = st.tuples(good, st.sampled_from(sorted(good.wrapped_strategy.mapping))).map(
    lambda t: {k: v for k, v in t[0].items() if k != t[1]}
)


@given(
    st.lists(st.one_of(good, good, good, bad_time, odd, dropped), max_size=MAX_BATCH + 2),
    st.booleans(),
)
@example([{**GOOD, "extra": "\ud800"}], True)
def test_the_shortcut_takes_a_batch_only_when_the_route_keeps_it_whole(
    readings, ascii_only
) -> None:
    # raw UTF-8 and DEL (ensure_ascii=False) as well as escapes: plain_text judges both
    text = json.dumps({"readings": readings}, ensure_ascii=ascii_only)
    body = text.encode("utf-8", "surrogatepass")
    fast = parse_batch(body, HEART_RATE, MAX_BATCH, MAX_DAYS)
    try:
        result = validate_batch(body, HEART_RATE, MAX_BATCH, MAX_DAYS)
    except (InvalidInput, PayloadTooLarge):  # the body as a whole is refused
        assert fast is None
        return
    whole = not result.errors and 0 < result.total <= MAX_BATCH
    if whole and fast is None:
        # an escaped lone surrogate ("\\ud800") in a field the route ignores: the fast
        # decoder refuses the body, the slow path ignores the field (the same answer, slower)
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(body)
        return
    assert (fast is not None) == whole
    if fast is not None:
        assert fast == result.rows


@given(st.text(), st.booleans())
def test_a_plain_body_decodes_to_printable_text_only(text, ascii_only) -> None:
    body = json.dumps([text], ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if plain_text(body):
        assert printable(text)
    if text.isascii() and text.isprintable() and not {"\\", '"'} & set(text):  # no escape
        assert plain_text(json.dumps([text]).encode())


def test_the_shortcut_leaves_empty_and_oversized_batches_to_the_route() -> None:
    one = {"user_id": "u", "device_id": "d", "timestamp": "2024-01-15T10:00:00Z", "heart_rate": 60}

    def body(count: int) -> bytes:
        return json.dumps({"readings": [one] * count}).encode()

    assert parse_batch(body(MAX_BATCH), HEART_RATE, MAX_BATCH, MAX_DAYS) is not None
    assert parse_batch(body(MAX_BATCH + 1), HEART_RATE, MAX_BATCH, MAX_DAYS) is None
    assert parse_batch(body(0), HEART_RATE, MAX_BATCH, MAX_DAYS) is None


def test_a_batch_over_too_many_days_is_refused_whole() -> None:
    def reading(day: int) -> dict[str, object]:
        return {
            "user_id": "u",
            "device_id": "d",
            "timestamp": f"2024-01-{day:02d}T10:00:00Z",
            "heart_rate": 60,
        }

    within = json.dumps({"readings": [reading(1), reading(2), reading(2)]}).encode()
    assert validate_batch(within, HEART_RATE, MAX_BATCH, MAX_DAYS).total == 3
    over = json.dumps({"readings": [reading(1), reading(2), reading(3)]}).encode()
    assert parse_batch(over, HEART_RATE, MAX_BATCH, MAX_DAYS) is None
    with pytest.raises(InvalidInput) as refused:
        validate_batch(over, HEART_RATE, MAX_BATCH, MAX_DAYS)
    assert refused.value.detail[0]["field"] == "readings"
    assert "3 UTC days" in str(refused.value.detail[0]["reason"])
    # only the readings that are kept count: a bad one on a third day does not
    bad_third = [reading(1), reading(2), {**reading(3), "heart_rate": 1}]
    result = validate_batch(json.dumps({"readings": bad_third}).encode(), HEART_RATE, 5, 2)
    assert (len(result.rows), len(result.errors)) == (2, 1)


steps_value = st.one_of(
    st.integers(-5, 100_005),
    st.floats(-5, 100_005),
    st.integers(0, 100_000).map(float),  # a float with no fraction: valid, but slow path
    st.booleans(),
)


@given(st.lists(steps_value, max_size=MAX_BATCH + 1))
def test_an_integer_metric_is_taken_fast_only_when_the_route_keeps_it_whole(values) -> None:
    base = {"user_id": "u", "device_id": "d", "timestamp": "2024-01-15T10:00:00Z"}
    body = json.dumps({"readings": [{**base, "steps": v} for v in values]}).encode()
    fast = parse_batch(body, STEPS, MAX_BATCH, MAX_DAYS)
    try:
        result = validate_batch(body, STEPS, MAX_BATCH, MAX_DAYS)
    except PayloadTooLarge:
        assert fast is None
        return
    if fast is not None:
        assert not result.errors
        assert fast == result.rows
    kept = [v for v in values if not isinstance(v, bool) and 0 <= v <= 100_000 and v == int(v)]
    assert result.rows.value == [float(v) for v in kept]
    assert all(type(v) is float for v in result.rows.value)
