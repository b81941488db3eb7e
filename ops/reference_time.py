"""Where a reading's bucket starts and how a bucket's start is written, in plain Python.

Part of the reference model (see ``reference.py``): instants are UTC epoch milliseconds,
zones are IANA names read by ``zoneinfo``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# the width of each interval; 1h and 1d buckets are local, so theirs is only nominal
WIDTH_MS = {
    "1s": SECOND_MS,
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "1d": DAY_MS,
}
LOCAL_INTERVALS = ("1h", "1d")


def instant(ts_ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts_ms)


def epoch_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def priority_bucket(ts_ms: int, interval: str) -> int:
    """The start of the UTC second (interval ``1s``) or else the UTC minute holding ``ts_ms``."""
    width = SECOND_MS if interval == "1s" else MINUTE_MS
    return ts_ms - ts_ms % width


def bucket_start(ts_ms: int, interval: str, tz: str) -> int:
    """The start of the output bucket of ``interval`` holding ``ts_ms``, seen from ``tz``."""
    if interval not in LOCAL_INTERVALS:
        width = WIDTH_MS[interval]
        return ts_ms - ts_ms % width  # aligned to UTC whatever the zone
    local = instant(ts_ms).astimezone(ZoneInfo(tz))
    if interval == "1h":
        # back to the instant the local clock showed HH:00:00 at the same offset, so the
        # repeated hour of a fall-back gives two buckets, and +05:30 gives :30 UTC
        into_hour = timedelta(
            minutes=local.minute, seconds=local.second, microseconds=local.microsecond
        )
        return ts_ms - into_hour // timedelta(milliseconds=1)
    return day_start(local.date(), tz)


def day_start(day: date, tz: str) -> int:
    """The first instant of the local calendar ``day``: local midnight when it exists."""
    zone = ZoneInfo(tz)
    midnight = datetime.combine(day, time(0), zone)
    # a midnight in a gap resolves (fold 0 or 1) to instants on either side of it; the ones
    # that read back as ``day`` are on it, and the earliest of them starts it
    candidates = [epoch_ms(midnight.replace(fold=fold)) for fold in (0, 1)]
    return min(c for c in candidates if instant(c).astimezone(zone).date() == day)


def offset_text(moment: datetime) -> str:
    """``+01:00``, ``-03:00``, ``+05:30``: the offset of an aware datetime."""
    offset = moment.utcoffset()
    assert offset is not None
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def label(ts_ms: int, tz: str) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in ``tz`` with its offset at that instant; ``Z`` for UTC.

    Milliseconds are written (``.123``) only when the instant has some.
    """
    local = instant(ts_ms).astimezone(ZoneInfo(tz))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if ts_ms % 1000:
        text += f".{ts_ms % 1000:03d}"
    return text + ("Z" if tz == "UTC" else offset_text(local))
