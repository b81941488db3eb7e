"""Timestamps become UTC milliseconds or are refused; the batch parser agrees with the
one-at-a-time parser on every input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import service.timestamps
from service.timestamps import parse_timestamp_ms, parse_timestamps_ms

BASE = 1_705_312_800_000  # 2024-01-15T10:00:00Z

digits = st.integers(min_value=0, max_value=99).map(lambda n: f"{n:02d}")
common = st.builds(
    lambda y, mo, d, h, mi, s, frac, z: f"{y:04d}-{mo}-{d}T{h}:{mi}:{s}{frac}{z}",
    st.integers(min_value=1, max_value=9999),
    digits,
    digits,
    digits,
    digits,
    digits,
    st.one_of(st.just(""), st.text("0123456789", min_size=0, max_size=12).map(lambda t: "." + t)),
    st.sampled_from(["Z", "z", "", "+02:00", "-05:30", " "]),
)
EDGES = [
    "2024-01-15T10:00:00Z",
    "2024-01-15T10:00:60Z",  # a leap second: refused
    "2024-02-29T23:59:59.999999999Z",
    "2023-02-29T00:00:00Z",
    "1969-12-31T23:59:59.9995Z",
    "1970-01-01T00:00:00.0005Z",
    "2024-01-15t10:00:00z",
    "2024-1-15T10:00:00.5Z",
    "2024-01-15T10:00:00.Z",
    "+2024-01-15T10:00:00Z",
    "2024-01-15T10:00:00+02:00",
    "2024-01-15T10:00:00",  # no offset: UTC
    "2024-01-15T24:00:00Z",
    "",
    "2024-02-01T00:00:00Z\x00garbage",
    "2024-02-01T00:00:00Zgarbage",
    "0001-02-01T00:00:00Z",
    "9999-02-01T00:00:00Z",
    "2100-12-31T23:59:59.999Z",
    "2101-01-01T00:00:00Z",
    "1970-01-01T00:30:00+01:00",
    "2024-01-15T10:00:00\n",
    "\uff12\uff10\uff12\uff14-01-15T10:00:00Z",
]


@given(st.lists(st.one_of(common, st.text(max_size=30), st.sampled_from(EDGES)), max_size=40))
def test_column_parser_matches_the_scalar_one(texts: list[str]) -> None:
    assert parse_timestamps_ms(texts) == [parse_timestamp_ms(t) for t in texts]


def test_edges_match() -> None:
    assert parse_timestamps_ms(EDGES) == [parse_timestamp_ms(t) for t in EDGES]
    assert parse_timestamps_ms(EDGES)[:2] == [1_705_312_800_000, None]


@given(st.lists(common, min_size=1, max_size=12), st.lists(st.integers(0, 11), max_size=60))
def test_a_batch_with_repeated_timestamps_matches_the_scalar_parser(
    pool: list[str], picks: list[int]
) -> None:
    texts = pool + [pool[i % len(pool)] for i in picks]
    assert parse_timestamps_ms(texts) == [parse_timestamp_ms(t) for t in texts]


def test_each_distinct_timestamp_of_a_batch_is_parsed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a gateway's batch: 100 devices' readings of the same 10 seconds
    seen: list[list[str]] = []
    usual = service.timestamps._parse_usual

    def counting(texts: list[str]) -> list[int | None] | None:
        seen.append(texts)
        return usual(texts)

    monkeypatch.setattr(service.timestamps, "_parse_usual", counting)
    texts = [f"2024-01-15T10:00:{i % 10:02d}Z" for i in range(1000)]
    assert parse_timestamps_ms(texts) == [1_705_312_800_000 + (i % 10) * 1000 for i in range(1000)]
    assert [len(batch) for batch in seen] == [10]


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-01T00:00:00Z\x00garbage",
        "2024-02-01T00:00:00Z garbage",
        "2024-02-01T00:00:00+01:00x",
        "0001-02-01T00:00:00Z",
        "9999-02-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC
        "2101-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff14-01-15T10:00:00Z",  # digits, but not ASCII ones
    ],
)
def test_only_whole_date_times_in_1970_to_2100_are_taken(text: str) -> None:
    assert parse_timestamp_ms(text) is None
    assert (
        parse_timestamps_ms([text] * 9 + [f"2024-01-15T10:00:0{i}Z" for i in range(9)])[0] is None
    )


def test_the_edges_of_the_accepted_years() -> None:
    assert parse_timestamp_ms("1970-01-01T00:00:00Z") == 0
    assert parse_timestamp_ms("2100-12-31T23:59:59.999Z") == 4_133_980_799_999


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T10:00:00Z", BASE),
        ("2024-01-15T10:00:00", BASE),
        ("2024-01-15 10:00:00z", BASE),
        ("2024-01-15T12:00:00+02:00", BASE),
        ("2024-01-15T05:30:00-04:30", BASE),
        ("2024-01-15T10:00:00.9999999Z", BASE + 999),
        ("2024-01-15T10:00:00.123+00:00", BASE + 123),
        ("1970-01-01T00:00:00.9995Z", 999),
    ],
)
def test_timestamps_become_utc_milliseconds(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-01-15",
        "2024-01-15T25:00:00Z",
        "2024-01-15T10:00:00+25:00",
        "soon",
        "2024-01-15T10:00:60Z",
        "2024-01-15X10:00:00Z",
    ],
)
def test_bad_timestamps_are_refused(text: str) -> None:
    assert parse_timestamp_ms(text) is None
