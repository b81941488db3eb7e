"""The stages of a 1,000-reading batch POST, each run alone (see ``ops.profile_writes``).

Each stage runs REPS times on the same body and ends with ``mark``, so under callgrind
each dump holds one stage's instructions (the first is the set-up). The flush stage turns
25 requests' rows into the fragment's frame, as a flush does (not the Parquet write): its
cost per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.profile_writes import _collect_like_a_worker, batch_body, mark
from service import metrics
from service.api.accept import batch_accepted_body, read_body
from service.ingest.buffer import Buffer
from service.ingest.commit import _write
from service.live.feed import ChangeFeed
from service.schema import HEART_RATE, Rows
from service.storage.wal import OwnedLog, encode_frame
from service.validation import (
    _columns,
    _decode_batch,
    _ids_printable,
    parse_batch,
    plain_text,
    span_days,
)


def _read(body: bytes) -> None:
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    coro = read_body(receive, 8 << 20)
    with contextlib.suppress(StopIteration):  # it never waits: the body is there
        coro.send(None)


def stages(reps: int) -> None:
    body = batch_body(0)
    spec = HEART_RATE
    items = _decode_batch(body, spec)
    assert items is not None
    rows = parse_batch(body, spec, 10_000, 31)
    assert rows is not None
    frame = encode_frame(spec.name, 1, rows)
    with tempfile.TemporaryDirectory() as tmp:
        log = OwnedLog(Path(tmp), "w1")
        buffer = Buffer()
        feed = ChangeFeed(Path(tmp), "w1")
        parts: list[tuple[str, Callable[[], object]]] = [
            ("body read", lambda: _read(body)),
            ("JSON decode (msgspec structs)", lambda: _decode_batch(body, spec)),
            ("columns + timestamps", lambda: _columns(items, spec)),
            ("ids printable (decoded)", lambda: _ids_printable(rows)),
            ("body plain text", lambda: plain_text(body)),
            ("day span", lambda: span_days(rows.ts, 31)),
            ("fast path whole (decode..span)", lambda: parse_batch(body, spec, 10_000, 31)),
            ("WAL encode", lambda: encode_frame(spec.name, 1, rows)),
            ("WAL write + fsync", lambda: _write(log, frame, True)),
            ("buffer add", lambda: buffer.add(spec.name, rows, 1)),
            ("stream feed (nobody watching)", lambda: feed.record(spec.name, rows, 1)),
            ("response body + tally", lambda: _respond(rows)),
        ]
        _collect_like_a_worker()
        mark("set-up")
        for name, run in parts:
            started = time.thread_time()
            for _ in range(reps):
                run()
            elapsed = time.thread_time() - started
            mark(f"{name} x{reps}")
            print(f"{name:>32}: {elapsed / reps * 1e6:8.1f} CPU us per request")
        _flush_stage(reps, rows)
        log.close(delete=True)


def _respond(rows: Rows) -> bytes:
    metrics.tally.inc(metrics.tally.child(metrics.READINGS_ACCEPTED, "batch"), len(rows))
    return batch_accepted_body(len(rows), 0, len(rows), [])


def _flush_stage(reps: int, rows: Rows) -> None:
    per_flush = 25
    started = time.thread_time()
    for _ in range(max(1, reps // per_flush)):
        buffer = Buffer()
        for n in range(per_flush):
            buffer.add(HEART_RATE.name, rows, n * len(rows))
        buffer.begin_flush()
        buffer.flushing_frames()
    elapsed = time.thread_time() - started
    mark(f"flush frame x{max(1, reps // per_flush)}")
    count = max(1, reps // per_flush) * per_flush
    print(f"{'flush frame (amortised)':>32}: {elapsed / count * 1e6:8.1f} CPU us per request")


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))
    stages(200)
