"""The reference model against examples computed by hand from notes/semantics.md."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from reference import expected_data, expected_series, expected_summary, resting
from reference_time import bucket_start, label

PRIORITY = {"device_a": 1, "device_b": 2}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)


def data(readings, start, end, scope="bucket", priority=PRIORITY, **options):
    return expected_data(readings, "u", ms(start), ms(end), priority, scope, **options)


def brief(items, field="heart_rate"):
    return [(d["timestamp"], d[field], d["device_id"]) for d in items]


@pytest.mark.parametrize(
    ("first", "last", "after", "day", "next_day"),
    [
        # spring forward: 2024-03-31 lasts 23 hours
        (
            "2024-03-30T23:00:00Z",
            "2024-03-31T21:59:59.999Z",
            "2024-03-31T22:00:00Z",
            "2024-03-31T00:00:00+01:00",
            "2024-04-01T00:00:00+02:00",
        ),
        # fall back: 2024-10-27 lasts 25 hours
        (
            "2024-10-26T22:00:00Z",
            "2024-10-27T22:59:59.999Z",
            "2024-10-27T23:00:00Z",
            "2024-10-27T00:00:00+02:00",
            "2024-10-28T00:00:00+01:00",
        ),
    ],
)
def test_a_berlin_dst_day_is_one_bucket(first, last, after, day, next_day) -> None:
    readings = [("u", "device_a", ms(t), 60.0) for t in (first, last, after)]
    readings.append(("u", "device_a", ms(first) - 1, 90.0))  # the day before
    got = data(
        readings, "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", interval="1d", tz="Europe/Berlin"
    )
    assert brief(got)[1:] == [(day, 60.0, "device_a"), (next_day, 60.0, "device_a")]
    assert got[0]["timestamp"] < day


def test_the_repeated_berlin_hour_is_two_buckets() -> None:
    readings = [
        ("u", "device_a", ms(t), v)
        for t, v in [
            ("2024-10-27T00:59:59Z", 60.0),  # 02:59:59 summer time
            ("2024-10-27T01:00:00Z", 80.0),  # 02:00:00 winter time
        ]
    ]
    got = data(
        readings, "2024-10-26T00:00:00Z", "2024-10-28T00:00:00Z", interval="1h", tz="Europe/Berlin"
    )
    assert brief(got) == [
        ("2024-10-27T02:00:00+02:00", 60.0, "device_a"),
        ("2024-10-27T02:00:00+01:00", 80.0, "device_a"),
    ]


def test_sydney_days_and_hours_across_both_transitions() -> None:
    zone = "Australia/Sydney"
    # April: 03:00 AEDT -> 02:00 AEST at 2024-04-06T16:00Z; the day lasts 25 hours
    assert label(bucket_start(ms("2024-04-06T13:00:00Z"), "1d", zone), zone) == (
        "2024-04-07T00:00:00+11:00"
    )
    assert bucket_start(ms("2024-04-07T13:59:59Z"), "1d", zone) == ms("2024-04-06T13:00:00Z")
    assert label(bucket_start(ms("2024-04-07T14:00:00Z"), "1d", zone), zone) == (
        "2024-04-08T00:00:00+10:00"
    )
    hours = [bucket_start(ms(t), "1h", zone) for t in ("2024-04-06T15:30Z", "2024-04-06T16:30Z")]
    assert [label(h, zone) for h in hours] == [
        "2024-04-07T02:00:00+11:00",
        "2024-04-07T02:00:00+10:00",
    ]
    # October: 02:00 AEST -> 03:00 AEDT at 2024-10-05T16:00Z; the day lasts 23 hours
    assert bucket_start(ms("2024-10-06T12:59:59Z"), "1d", zone) == ms("2024-10-05T14:00:00Z")
    assert label(bucket_start(ms("2024-10-06T13:00:00Z"), "1d", zone), zone) == (
        "2024-10-07T00:00:00+11:00"
    )
    assert label(bucket_start(ms("2024-10-05T16:00:00Z"), "1h", zone), zone) == (
        "2024-10-06T03:00:00+11:00"  # 02:00 does not exist
    )


def test_kolkata_hours_start_at_half_past_utc_and_narrow_buckets_stay_utc() -> None:
    zone = "Asia/Kolkata"
    readings = [("u", "device_a", ms("2024-01-15T10:45:00Z"), 70.0)]
    window = ("2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z")
    assert brief(data(readings, *window, interval="1h", tz=zone)) == [
        ("2024-01-15T16:00:00+05:30", 70.0, "device_a")  # 10:30Z
    ]
    assert brief(data(readings, *window, interval="30m", tz=zone)) == [
        ("2024-01-15T16:00:00+05:30", 70.0, "device_a")  # 10:30Z, UTC-aligned
    ]
    assert brief(data(readings, *window, interval="15m", tz=zone)) == [
        ("2024-01-15T16:15:00+05:30", 70.0, "device_a")
    ]
    assert brief(data(readings, *window, interval="1d", tz=zone)) == [
        ("2024-01-15T00:00:00+05:30", 70.0, "device_a")  # 2024-01-14T18:30Z
    ]
    assert bucket_start(ms("2024-01-15T10:29:59Z"), "1h", zone) == ms("2024-01-15T09:30:00Z")


def test_a_nonexistent_midnight_starts_the_day_at_its_first_instant() -> None:
    # Santiago: 2024-09-08 00:00 -04:00 becomes 01:00 -03:00
    zone = "America/Santiago"
    start = bucket_start(ms("2024-09-08T12:00:00Z"), "1d", zone)
    assert start == ms("2024-09-08T04:00:00Z")
    assert label(start, zone) == "2024-09-08T01:00:00-03:00"
    assert bucket_start(ms("2024-09-08T03:59:59Z"), "1d", zone) < start


def test_utc_is_written_z_and_a_zero_offset_elsewhere_is_not() -> None:
    assert label(ms("2024-01-15T10:00:00Z"), "UTC") == "2024-01-15T10:00:00Z"
    assert label(ms("2024-01-15T10:00:00Z"), "Europe/London") == "2024-01-15T10:00:00+00:00"
    assert label(ms("2024-01-15T10:00:00Z"), "America/Sao_Paulo") == "2024-01-15T07:00:00-03:00"


def test_majority_device_names_a_wide_bucket_and_ties_go_to_priority() -> None:
    at = ms("2024-01-15T10:00:00Z")
    window = ("2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z")
    tie = [
        ("u", "device_b", at + 1_000, 60.0),
        ("u", "device_b", at + 2_000, 60.0),
        ("u", "watch_x", at + 61_000, 90.0),
        ("u", "watch_x", at + 62_000, 90.0),
    ]
    got = data(tie, *window, interval="5m", stats=("count", "min", "max"))
    assert got == [
        {
            "timestamp": "2024-01-15T10:00:00Z",
            "heart_rate": 75.0,  # over readings, not minutes
            "device_id": "device_b",
            "min": 60.0,
            "max": 90.0,
            "count": 4,
        }
    ]
    more = [*tie, ("u", "watch_x", at + 121_000, 90.0)]
    assert brief(data(more, *window, interval="5m")) == [("2024-01-15T10:00:00Z", 78.0, "watch_x")]
    unlisted = [("u", "watch_y", at, 60.0), ("u", "watch_x", at + 61_000, 70.0)]
    assert brief(data(unlisted, *window, interval="5m"))[0][2] == "watch_x"


def test_timestamp_scope_keeps_uncontested_readings_and_names_the_best() -> None:
    at = ms("2024-01-15T10:00:00Z")
    readings = [
        ("u", "device_b", at, 80.0),
        ("u", "device_a", at, 70.0),
        ("u", "device_b", at + 30_000, 90.0),
    ]
    window = ("2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z")
    assert brief(data(readings, *window, "timestamp")) == [
        ("2024-01-15T10:00:00Z", 80.0, "device_a")
    ]
    assert brief(data(readings, *window, "bucket")) == [("2024-01-15T10:00:00Z", 70.0, "device_a")]
    # 5 minutes wide: one reading each, a tie, so the better device
    assert brief(data(readings, *window, "timestamp", interval="5m"))[0][2] == "device_a"
    later = [*readings, ("u", "device_b", at + 60_000, 100.0)]
    assert brief(data(later, *window, "timestamp", interval="5m")) == [
        ("2024-01-15T10:00:00Z", pytest.approx(260 / 3), "device_b")
    ]


def test_one_second_interval_decides_priority_per_second() -> None:
    at = ms("2024-01-15T10:00:00Z")
    readings = [("u", "device_a", at, 70.0), ("u", "device_b", at + 1_500, 80.0)]
    window = ("2024-01-15T10:00:00Z", "2024-01-15T10:01:00Z")
    assert brief(data(readings, *window, interval="1s")) == [
        ("2024-01-15T10:00:00Z", 70.0, "device_a"),
        ("2024-01-15T10:00:01Z", 80.0, "device_b"),
    ]
    assert brief(data(readings, *window, interval="1m")) == [
        ("2024-01-15T10:00:00Z", 70.0, "device_a")
    ]


def test_steps_of_a_phone_and_a_watch_in_one_minute_are_not_added() -> None:
    priority = {"watch": 1, "phone": 2}
    at = ms("2024-01-15T10:00:00Z")
    readings = [
        ("u", "phone", at + 10_000, 120.0),
        ("u", "watch", at + 20_000, 100.0),
        ("u", "watch", at + 40_000, 30.0),
        ("u", "phone", at + 70_000, 50.0),  # the next minute: the phone alone
    ]
    window = ("2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z")
    got = data(readings, *window, priority=priority, metric="steps", stats=("min", "max"))
    assert brief(got, "steps") == [
        ("2024-01-15T10:00:00Z", 130, "watch"),
        ("2024-01-15T10:01:00Z", 50, "phone"),
    ]
    assert all(type(d[k]) is int for d in got for k in ("steps", "min", "max"))
    hour = data(readings, *window, priority=priority, metric="steps", interval="1h")
    assert brief(hour, "steps") == [("2024-01-15T10:00:00Z", 180, "watch")]
    calories = data(readings, *window, priority=priority, metric="calories", interval="1h")
    assert brief(calories, "calories") == [("2024-01-15T10:00:00Z", 180.0, "watch")]


def test_last_write_wins_and_the_device_filter_ignores_priority() -> None:
    at = ms("2024-01-15T10:00:00Z")
    readings = [
        ("u", "device_a", at, 60.0),
        ("u", "device_b", at, 90.0),
        ("u", "device_a", at, 100.0),  # replaces 60
        ("u", "device_a", at, 100.0),  # a repeat: no change
        ("v", "device_a", at, 30.0),  # another user
    ]
    window = ms("2024-01-15T10:00:00Z"), ms("2024-01-15T10:01:00Z")
    assert expected_series(readings, "u", *window, PRIORITY) == [
        ("2024-01-15T10:00:00Z", 100.0, "device_a")
    ]
    assert expected_series(readings, "u", *window, PRIORITY, device_id="device_b") == [
        ("2024-01-15T10:00:00Z", 90.0, "device_b")
    ]
    assert expected_series(readings, "u", window[1], window[1] + 60_000, PRIORITY) == []


def test_resting_is_the_lowest_five_minute_run_of_minute_means() -> None:
    minute = 60_000
    means = {k * minute: v for k, v in enumerate([60.0, 62.0, 58.0, 70.0, 80.0, 50.0])}
    means |= {k * minute: 40.0 for k in range(7, 11)}  # only four minutes in a row
    assert resting(means) == pytest.approx((62 + 58 + 70 + 80 + 50) / 5)
    assert resting({k * minute: 40.0 for k in (0, 1, 2, 3, 5)}) is None


def test_summary_counts_like_the_series() -> None:
    at = ms("2024-01-15T10:00:00Z")
    heart = [("u", "device_a", at, 50.0), ("u", "device_a", at + 30_000, 70.0)]
    heart += [("u", "device_a", at + k * 60_000, v) for k, v in [(1, 62.0), (2, 58.0)]]
    heart += [("u", "device_a", at + k * 60_000, v) for k, v in [(3, 70.0), (4, 80.0)]]
    heart += [("u", "device_b", at + 5 * 60_000, 50.0), ("u", "device_a", at + 5 * 60_000, 90.0)]
    heart += [("u", "device_b", at + 5 * 60_000 + 1, 200.0)]  # dropped: device_a has that minute
    steps = [("u", "device_b", at, 100.0), ("u", "watch", at + 1, 80.0)]
    steps += [("u", "watch", at + 120_000, 7.0)]
    got = expected_summary(
        {"heart_rate": heart, "steps": steps},
        "u",
        at,
        at + 3_600_000,
        PRIORITY,
        tz="Europe/Berlin",
    )
    assert got == {
        "user_id": "u",
        "start": "2024-01-15T11:00:00+01:00",
        "end": "2024-01-15T12:00:00+01:00",
        "heart_rate": {
            "mean": pytest.approx(480 / 7),
            "min": 50.0,
            "max": 90.0,
            "count": 7,
            "minutes": 6,
            "resting": pytest.approx((60 + 62 + 58 + 70 + 80) / 5),  # minute means, not 65
        },
        "steps": {"total": 107, "minutes": 2},
        "calories": None,
        "devices": [
            {"device_id": "device_a", "readings": 7, "minutes": 6},
            {"device_id": "device_b", "readings": 1, "minutes": 1},
            {"device_id": "watch", "readings": 1, "minutes": 1},
        ],
    }
    assert type(got["steps"]["total"]) is int  # type: ignore[index]
    assert expected_summary({"heart_rate": heart}, "v", at, at + 60_000, PRIORITY) is None
