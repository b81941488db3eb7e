"""A user's export, streamed: every de-duplicated raw reading, one metric-day at a time.

Rows: ``EXPORT_SCHEMA`` (``timestamp``, ``device_id``, ``metric``, ``value``), sorted by
metric, then timestamp, then device. Readings come from the sources a series reads (the
reader's unflushed rows first, then the listed files), so an export shows what a query
would; a reading identity lies within one UTC day, so de-duplicating day by day is exact.

Memory: a first pass per metric reads only the user's timestamps to learn which UTC days
hold readings (a set of day numbers); then each day is read, de-duplicated, sorted and
encoded alone. What is held at once is one day of one metric (86,400 rows at 1 Hz) plus the
unflushed rows every query holds anyway, whatever the length of the history.

Encodings: CSV (header once; timestamps ``YYYY-MM-DDTHH:MM:SS.mmmZ``; text cells that a
spreadsheet would run as a formula get a leading ``'``, see ``service.export``), NDJSON
(one object per line), Parquet (one file: Polars' streaming Parquet sink writes its row
groups into a pipe as the days arrive, and the pipe's other end is the response).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import polars as pl
from polars.io.plugins import register_io_source

from service.export import Format, escape_formulas
from service.query.aggregate import combine
from service.query.reader import Reader
from service.query.sources import Query
from service.schema import DAY_MS
from service.timestamps import MAX_MS, MIN_MS

EXPORT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("ms", "UTC"),
    "device_id": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
}
MEDIA_TYPES: dict[Format, str] = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
PIPE_CHUNK = 1 << 20  # bytes read from the Parquet pipe per response chunk


@dataclass(frozen=True, slots=True)
class Export:
    user_id: str
    metrics: tuple[str, ...]
    start_ms: int = MIN_MS  # every timestamp ingestion accepts, by default
    end_ms: int = MAX_MS


def frames(reader: Reader, export: Export) -> Iterator[pl.DataFrame]:
    """The export's rows, one non-empty metric-day frame at a time, in export order.
    Blocking: each step reads files."""
    for metric in sorted(export.metrics):
        unflushed = reader.unflushed(metric)  # before the manifest, as every query
        whole = Query(metric, export.user_id, export.start_ms, export.end_ms)
        for day in days(reader, whole, unflushed):
            q = Query(
                metric,
                export.user_id,
                max(export.start_ms, day * DAY_MS),
                min(export.end_ms, (day + 1) * DAY_MS),
            )
            frame = day_rows(reader, q, unflushed)
            if frame.height:
                yield frame


def days(reader: Reader, q: Query, unflushed: list[pl.DataFrame]) -> list[int]:
    """The UTC days (epoch day numbers) in which ``q`` has rows, ascending."""
    settled, fresh = reader.rows(q, unflushed)
    parts = [lf.select("ts") for lf in (settled, fresh) if lf is not None]
    if not parts:
        return []
    day = (pl.col("ts").dt.epoch("ms") // DAY_MS).alias("day")
    found = pl.concat(parts).select(day).unique().collect(engine="streaming")
    return sorted(found["day"].to_list())


def day_rows(reader: Reader, q: Query, unflushed: list[pl.DataFrame]) -> pl.DataFrame:
    """The de-duplicated rows of ``q`` (within one UTC day) as export rows, sorted."""
    settled, fresh = reader.rows(q, unflushed)
    if settled is None and fresh is None:
        return pl.DataFrame(schema=EXPORT_SCHEMA)
    return (
        combine(settled, fresh)
        .select(
            pl.col("ts").alias("timestamp"),
            "device_id",
            pl.lit(q.metric, pl.String).alias("metric"),
            "value",
        )
        .sort("timestamp", "device_id")
        .collect()
    )


def encode(parts: Iterator[pl.DataFrame], fmt: Format) -> Iterator[bytes]:
    """The export rows ``parts`` as the bytes of one ``fmt`` document, piece by piece."""
    if fmt == "parquet":
        return parquet_chunks(parts)
    return _text_chunks(parts, fmt)


def _text_chunks(parts: Iterator[pl.DataFrame], fmt: Format) -> Iterator[bytes]:
    first = True
    for frame in parts:
        text = frame.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
        if fmt == "ndjson":
            yield text.write_ndjson().encode()
        else:
            yield escape_formulas(text).write_csv(include_header=first).encode()
        first = False


def parquet_chunks(parts: Iterator[pl.DataFrame]) -> Iterator[bytes]:
    """One Parquet file written by a thread into a pipe, read back a chunk at a time.

    Closing this iterator early (the client went away) stops the writer before its next
    day: Polars does not stop on a failed write, so the days' source checks a flag.
    """
    read_fd, write_fd = os.pipe()
    stop = threading.Event()
    failed: list[BaseException] = []
    with os.fdopen(read_fd, "rb") as source:
        sink = os.fdopen(write_fd, "wb")
        writer = threading.Thread(
            target=_write_parquet,
            args=(_until(stop, parts), sink, stop, failed),
            name="export-parquet",
            daemon=True,
        )
        writer.start()
        try:
            while chunk := source.read(PIPE_CHUNK):
                yield chunk
        finally:
            stop.set()
            source.close()  # unblocks a writer blocked on a full pipe
            writer.join()
    if failed:
        raise failed[0]


def _until(stop: threading.Event, parts: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    for part in parts:
        if stop.is_set():
            return
        yield part


def _write_parquet(
    parts: Iterator[pl.DataFrame],
    sink: BinaryIO,
    stop: threading.Event,
    failed: list[BaseException],
) -> None:
    def source(
        _columns: Sequence[str] | None, _predicate: object, _n_rows: int | None, _size: int | None
    ) -> Iterator[pl.DataFrame]:
        yield from parts

    try:
        with sink:
            register_io_source(source, schema=EXPORT_SCHEMA).sink_parquet(sink, engine="streaming")
    except BaseException as exc:  # handed to the reading thread, which raises it
        if not stop.is_set():  # else the reader closed the pipe: nobody wants the rest
            failed.append(exc)
