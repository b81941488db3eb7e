"""The column-wise timestamp parser agrees with the one-at-a-time parser on every input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.validation import parse_timestamp_ms, parse_timestamps_ms

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
    "",
]


@given(st.lists(st.one_of(common, st.text(max_size=30), st.sampled_from(EDGES)), max_size=40))
def test_column_parser_matches_the_scalar_one(texts: list[str]) -> None:
    assert parse_timestamps_ms(texts) == [parse_timestamp_ms(t) for t in texts]


def test_edges_match() -> None:
    assert parse_timestamps_ms(EDGES) == [parse_timestamp_ms(t) for t in EDGES]
    assert parse_timestamps_ms(EDGES)[:2] == [1_705_312_800_000, None]
