"""A series answer: priority partials -> buckets -> JSON or CSV bytes, written by Polars
(no per-row Python objects)."""

from __future__ import annotations

import io
import json

import polars as pl

from service.query.buckets import Shape, columns, widen
from service.query.reader import Reader
from service.query.sources import Query
from service.schema import METRICS


def series(reader: Reader, q: Query, shape: Shape) -> pl.DataFrame | None:
    """The buckets of ``q`` as the series' fields, or None when no reading matches."""
    parts = reader.run(q)
    return None if parts is None else shaped(reader, q.metric, q.device_id, parts, shape)


def shaped(
    reader: Reader, metric: str, device_id: str | None, parts: pl.DataFrame, shape: Shape
) -> pl.DataFrame:
    """Priority partials of ``metric`` (of one device, or of all of them) -> the buckets
    as the series' fields."""
    spec = METRICS[metric]
    priority = reader.priority if device_id is None else None
    one_per_slot = priority is None or reader.scope == "bucket"
    return columns(widen(parts, shape, spec, priority, one_per_slot), shape, spec)


def to_json(user_id: str, frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    out.write(b'{"user_id":' + json.dumps(user_id).encode() + b',"data":')
    frame.write_json(out)  # into the buffer: no text copy to decode and encode again
    out.write(b',"count":' + str(frame.height).encode() + b"}")
    return out.getvalue()


def to_csv(frame: pl.DataFrame) -> bytes:
    # ids are printable text, but may start with a character a spreadsheet would run as a
    # formula: such cells get a leading apostrophe
    risky = pl.col("device_id").str.contains(r"^[=+\-@]")
    safe = frame.with_columns(
        pl.when(risky)
        .then("'" + pl.col("device_id"))
        .otherwise(pl.col("device_id"))
        .alias("device_id")
    )
    return safe.write_csv().encode()


def json_body(reader: Reader, q: Query, shape: Shape | None = None) -> bytes | None:
    """The JSON answer to ``q`` (per-minute buckets in UTC unless ``shape`` says otherwise)."""
    frame = series(reader, q, shape or Shape())
    return None if frame is None else to_json(q.user_id, frame)
