"""The feed's columnar readings give back exactly the readings put in."""

from __future__ import annotations

from service.live.feed import Readings, note

ROWS = [("a", 1_000, 70.0, 1), ("b", 2_000, 71.5, 2), ("a", 3_000, 72.0, 3), ("c", 500, 1.0, 4)]


def held(rows: list[tuple[str, int, float, int]]) -> Readings:
    out = Readings()
    for row in rows:
        out.append(*row)
    return out


def test_readings_give_back_what_was_added_in_order() -> None:
    readings = held(ROWS)
    assert len(readings) == 4
    assert list(readings) == ROWS
    more = held(ROWS[:1])
    more.extend(readings)
    assert list(more) == ROWS[:1] + ROWS


def test_picked_keeps_one_device_from_a_stamp_on() -> None:
    readings = held(ROWS)
    assert list(readings.picked("a", 2_000)) == [ROWS[2]]
    assert list(readings.picked(None, 1_000)) == ROWS[:3]
    assert list(readings.picked("nobody", 0)) == []
    assert readings.code("nobody") is None
    assert readings.code(None) == -1
    assert [readings.device_ids()[i] for i in range(4)] == ["a", "b", "a", "c"]


def test_note_groups_readings_by_key() -> None:
    changes: dict[tuple[str, str], Readings] = {}
    for i, row in enumerate(ROWS):
        note(changes, ("heart_rate", f"u{i % 2}"), row)
    assert {k: list(v) for k, v in changes.items()} == {
        ("heart_rate", "u0"): [ROWS[0], ROWS[2]],
        ("heart_rate", "u1"): [ROWS[1], ROWS[3]],
    }
