"""The metrics the service stores: adding one is an entry here plus its aggregation rule.

Storage is metric-agnostic: every reading becomes a row of ``ROW_SCHEMA`` under its
metric's name; only validation bounds and the per-bucket aggregation differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import polars as pl

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.validation import Rows

Aggregation = Literal["mean", "sum"]

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

    @property
    def path(self) -> str:
        """The metric's URL: ``/metrics/heart-rate`` for ``heart_rate``."""
        return "/metrics/" + self.name.replace("_", "-")


HEART_RATE = MetricSpec("heart_rate", "heart_rate", 30.0, 220.0, "mean")

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (HEART_RATE,)}
