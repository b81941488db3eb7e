"""The export streams: one metric-day at a time, and Parquet row groups as days arrive."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from service.config import Settings
from service.ingest.buffer import Buffer
from service.query.export import EXPORT_SCHEMA, Export, encode, frames, parquet_chunks
from service.query.reader import Reader
from service.schema import DAY_MS, ROW_SCHEMA, Rows
from service.storage.compaction import compact
from service.storage.store import Store

BASE = 1_705_276_800_000  # 2024-01-15T00:00:00Z


def history(days: int, per_day: int, user: str = "u", first_seq: int = 0) -> pl.DataFrame:
    ts = [BASE + d * DAY_MS + i * (DAY_MS // per_day) for d in range(days) for i in range(per_day)]
    return pl.DataFrame(
        {
            "user_id": [user] * len(ts),
            "device_id": ["device_a"] * len(ts),
            "ts": ts,
            "value": [60.0 + i % 7 for i in range(len(ts))],
            "seq": range(first_seq, first_seq + len(ts)),
        },
        schema=ROW_SCHEMA,
    )


@pytest.fixture
def reader(tmp_path: Path) -> Reader:
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    # one level-0 fragment spans all five days (and holds another user); a second, later
    # one repeats day 2's readings; part of the history is compacted, part is not
    store.publish({"heart_rate": pl.concat([history(3, 100), history(3, 50, "v")])})
    assert compact(store, force=True, grace_s=3600) is not None
    store.publish({"heart_rate": history(5, 100, first_seq=10_000)})
    buffer = Buffer()
    late = Rows()
    late.add("u", "device_b", BASE + 4 * DAY_MS + 1, 99.0)
    buffer.add("heart_rate", late, 50_000)
    return Reader(Settings(data_dir=tmp_path), store, buffer)


def test_each_frame_is_one_metric_day_of_unique_sorted_rows(reader: Reader) -> None:
    parts = list(frames(reader, Export("u", ("steps", "heart_rate"))))
    days = [part["timestamp"].dt.epoch("ms") // DAY_MS for part in parts]
    assert [d.n_unique() for d in days] == [1] * 5  # never more than one day at a time
    assert [d[0] for d in days] == [BASE // DAY_MS + i for i in range(5)]
    assert [part.height for part in parts] == [100, 100, 100, 100, 101]  # de-duplicated
    assert all(part["timestamp"].is_sorted() for part in parts)
    assert parts[-1].row(1)[1:] == ("device_b", "heart_rate", 99.0)  # the unflushed row


def test_export_range_cuts_inside_a_day(reader: Reader) -> None:
    start, end = BASE + DAY_MS // 2, BASE + DAY_MS + DAY_MS // 4
    parts = list(frames(reader, Export("u", ("heart_rate",), start, end)))
    assert [part.height for part in parts] == [50, 25]


def days_of(n: int, pulled: list[int]) -> Iterator[pl.DataFrame]:
    for day in range(n):
        pulled.append(day)
        ts = pl.Series(range(86_400), dtype=pl.Int64) * 1000 + BASE + day * DAY_MS
        yield pl.DataFrame(
            {"timestamp": ts, "device_id": "a", "metric": "heart_rate", "value": 70.0},
            schema=EXPORT_SCHEMA,
        )


def test_parquet_bytes_flow_before_the_last_day_is_read() -> None:
    pulled: list[int] = []
    chunks = parquet_chunks(days_of(20, pulled))
    first = next(chunks)
    assert len(pulled) < 20  # the file is written as the days come, not after
    data = first + b"".join(chunks)
    frame = pl.read_parquet(io.BytesIO(data))
    assert frame.height == 20 * 86_400
    assert frame["timestamp"].is_sorted()


def test_closing_the_parquet_stream_stops_reading_days() -> None:
    pulled: list[int] = []
    chunks = parquet_chunks(days_of(20, pulled))
    next(chunks)
    chunks.close()  # the client went away
    seen = len(pulled)
    assert seen < 20
    assert len(pulled) == seen  # the writer thread is done: nothing more is pulled


def test_csv_header_once_then_rows_per_day() -> None:
    chunks = list(encode(days_of(2, []), "csv"))
    assert len(chunks) == 2
    assert chunks[0].startswith(b"timestamp,device_id,metric,value\n")
    assert not chunks[1].startswith(b"timestamp")
