"""What a reading is, in memory and on disk: the metrics, rows, schemas and time units.

Storage is metric-agnostic: every reading becomes a row of ``ROW_SCHEMA`` under its
metric's name; adding a metric is an entry in ``METRICS`` with its validation bounds and
its per-bucket aggregation. Every other module takes these definitions from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

Aggregation = Literal["mean", "sum"]

MINUTE_MS = 60_000
DAY_MS = 86_400_000  # a UTC day: the unit of compaction and of a batch's day limit

ROW_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "device_id": pl.String(),
    "ts": pl.Datetime("ms", "UTC"),
    "value": pl.Float64(),
    "seq": pl.Int64(),
}

# per user, device and UTC minute: the partial aggregates of its de-duplicated readings
ROLLUP_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "device_id": pl.String(),
    "minute": pl.Datetime("ms", "UTC"),
    "sum": pl.Float64(),
    "count": pl.Int64(),
    "min": pl.Float64(),
    "max": pl.Float64(),
}

# a reading's identity: the same identity sent again replaces the earlier value
IDENTITY = ("user_id", "device_id", "ts")


@dataclass(slots=True)
class Rows:
    """Validated readings of one metric, column by column; ``ts`` in UTC epoch ms."""

    user_id: list[str] = field(default_factory=list)
    device_id: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def extend(self, other: Rows) -> None:
        self.user_id.extend(other.user_id)
        self.device_id.extend(other.device_id)
        self.ts.extend(other.ts)
        self.value.extend(other.value)

    def add(self, user_id: str, device_id: str, ts: int, value: float) -> None:
        self.user_id.append(user_id)
        self.device_id.append(device_id)
        self.ts.append(ts)
        self.value.append(value)


def rows_frame(rows: Rows, seq: Sequence[int]) -> pl.DataFrame:
    """Validated rows and their ingest sequence numbers as a frame of ``ROW_SCHEMA``."""
    return pl.DataFrame(
        {
            "user_id": rows.user_id,
            "device_id": rows.device_id,
            "ts": rows.ts,
            "value": rows.value,
            "seq": seq,
        },
        schema=ROW_SCHEMA,
    )


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # storage name; the URL uses it with "-" for "_"
    field: str  # JSON field carrying the value
    minimum: float
    maximum: float
    aggregation: Aggregation
    integer: bool = False  # whole numbers only (a JSON float with no fraction is one)

    @property
    def path(self) -> str:
        """The metric's URL: ``/metrics/heart-rate`` for ``heart_rate``."""
        return "/metrics/" + self.name.replace("_", "-")


HEART_RATE = MetricSpec("heart_rate", "heart_rate", 30.0, 220.0, "mean")
STEPS = MetricSpec("steps", "steps", 0.0, 100_000.0, "sum", integer=True)
CALORIES = MetricSpec("calories", "calories", 0.0, 10_000.0, "sum")

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (HEART_RATE, STEPS, CALORIES)}
