"""One user's readings written to a file (``ops/maint export``), in the API's terms.

Columns: ``timestamp`` (CSV and NDJSON: ISO 8601 UTC with ``Z`` and milliseconds;
Parquet: a UTC datetime in ms), ``device_id``, ``metric``, ``value``; rows sorted by
metric, then timestamp (then device). The user id is the export's subject, so no column.
Readings are de-duplicated by identity, flushed and not yet flushed (WAL) alike.

CSV text cells that a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@``,
tab, carriage return first) get a leading ``'`` (OWASP's CSV-injection advice); numbers
are written as numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import polars as pl

from service.query.aggregate import dedupe
from service.schema import ROW_SCHEMA
from service.storage.files import create_private
from service.storage.store import Store
from service.storage.wal import list_segments, read_segment, to_frame

Format = Literal["csv", "ndjson", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson", "parquet")
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
}
_FORMULA = r"^[=+\-@\t\r]"


class ExportError(ValueError):
    """The export cannot be written as asked (e.g. no format known for the file name)."""


def format_of(out: Path, given: Format | None = None) -> Format:
    """``given`` if any, else the format ``out``'s suffix names."""
    if given is not None:
        return given
    try:
        return _SUFFIXES[out.suffix.lower()]
    except KeyError:
        raise ExportError(
            f"cannot tell the export format from {out.name!r}: name it .csv, .ndjson, "
            ".jsonl or .parquet, or pass --format csv|ndjson|parquet"
        ) from None


def readings(store: Store, user_id: str, metrics: Sequence[str]) -> pl.DataFrame:
    """The user's de-duplicated readings of ``metrics`` as export rows, sorted."""
    parts = [_metric_readings(store, user_id, metric) for metric in sorted(metrics)]
    return pl.concat(parts).sort("metric", "timestamp", "device_id")


def _metric_readings(store: Store, user_id: str, metric: str) -> pl.DataFrame:
    paths = [
        store.fragment_dir / f.name for f in store.manifest.read().fragments if f.metric == metric
    ]
    frames = [pl.scan_parquet(paths, schema=ROW_SCHEMA)] if paths else []
    shared = store.table_rows(metric, 0, 2**62, user_id)  # HR_STORE=delta: the shared table
    if shared is not None:
        frames.append(shared)
    for segments in list_segments(store.wal_dir).values():
        frames += [to_frame(read_segment(path), metric).lazy() for path in segments]
    rows = pl.concat(frames) if frames else pl.LazyFrame(schema=ROW_SCHEMA)
    return (
        dedupe(rows.filter(pl.col("user_id") == user_id))
        .select(
            pl.col("ts").alias("timestamp"),
            "device_id",
            pl.lit(metric, pl.String).alias("metric"),
            "value",
        )
        .collect()
    )


def write(data: pl.DataFrame, out: Path, fmt: Format) -> None:
    """Write export rows to ``out`` (created ``0600``: it holds health data)."""
    if fmt != "parquet":
        data = data.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    with create_private(out) as f:
        if fmt == "parquet":
            data.write_parquet(f)
        elif fmt == "ndjson":
            data.write_ndjson(f)
        else:
            escape_formulas(data).write_csv(f)


def escape_formulas(data: pl.DataFrame) -> pl.DataFrame:
    """Text cells a spreadsheet would evaluate, made plain text with a leading ``'``."""
    text = [name for name, dtype in data.schema.items() if dtype == pl.String]
    return data.with_columns(
        pl.when(pl.col(name).str.contains(_FORMULA))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name in text
    )
