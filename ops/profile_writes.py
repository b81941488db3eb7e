"""Where a write request's work goes, in-process: the served ASGI app called directly (no
sockets, no HTTP parsing), many requests in flight on one event loop as in a worker.

``.venv/bin/python -m ops.profile_writes requests KIND [N] [IN_FLIGHT]`` runs N requests of
KIND (``batch``: 1,000 heart-rate readings as ``ops/bench`` sends them; ``single``; ``records``:
1,000 records of heart rate and steps) after a warm-up, durability ``fsync``, no flush
(``--flush`` keeps the default flush size, so flushes run beside the load as in a server).
``stages [REPS]`` runs each stage of a 1,000-reading batch alone, REPS times.

Both print CPU microseconds of this thread. Instruction counts, steadier on a shared
machine: run under ``valgrind --tool=callgrind --dump-before=os_sched_yield``; the driver
calls ``os.sched_yield()`` after each measured part, so dump file N holds part N (the
warm-up is part 1 of ``requests``; a stage's part is named in the printed order). Faster:
``HR_CALLGRIND_CTL=libcgctl.so`` (a 4-line C library over ``valgrind/callgrind.h``'s
``CALLGRIND_START_INSTRUMENTATION`` and ``CALLGRIND_DUMP_STATS_AT``) with
``--instr-atstart=no``: the imports run uninstrumented and each dump is named after its part.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.app import GC_YOUNG_THRESHOLD, ServiceApp, create_app
from service.config import Settings

BASE = datetime(2024, 1, 1, tzinfo=UTC)
_CTL = ctypes.CDLL(os.environ["HR_CALLGRIND_CTL"]) if os.environ.get("HR_CALLGRIND_CTL") else None


def mark(part: str) -> None:
    """The end of a measured part (callgrind dumps its counts), the start of the next."""
    if _CTL is None:
        os.sched_yield()
        return
    _CTL.cg_dump(part.encode())
    _CTL.cg_start()


PATHS = {
    "batch": "/metrics/heart-rate/batch",
    "single": "/metrics/heart-rate",
    "records": "/readings",
}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_body(n: int, size: int = 1000, field: str = "heart_rate") -> bytes:
    """Body ``n`` as ``ops/bench`` writes them: 100 users, two devices, 10 seconds."""
    readings = []
    for j in range(size):
        k = n * size + j
        readings.append(
            {
                "user_id": f"bench-u{k % 100}",
                "device_id": "device_a" if (k // 100) % 2 == 0 else "device_b",
                "timestamp": _iso(BASE + timedelta(seconds=k // 100)),
                field: 50 + (k * 7) % 100,
            }
        )
    return json.dumps({"readings": readings}, separators=(",", ":")).encode()


def records_body(n: int, size: int = 1000) -> bytes:
    doc = json.loads(batch_body(n, size))
    for k, item in enumerate(doc["readings"]):
        item["steps"] = k % 50
    return json.dumps(doc["readings"], separators=(",", ":")).encode()


def single_body(n: int) -> bytes:
    ts = _iso(BASE + timedelta(seconds=n // 1000)).replace("Z", f".{n % 1000:03d}Z")
    return b'{"user_id":"bench-u%d","device_id":"device_a","timestamp":"%s","heart_rate":%d}' % (
        n % 1000,
        ts.encode(),
        50 + (n * 7) % 100,
    )


BODIES: dict[str, Callable[[int], bytes]] = {
    "batch": batch_body,
    "single": single_body,
    "records": records_body,
}


def _scope(path: str, length: int) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _run(app: ServiceApp, path: str, bodies: list[bytes], in_flight: int) -> list[int]:
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one(body: bytes) -> None:
        message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> dict[str, Any]:
            return message

        await app(_scope(path, len(body)), receive, send)

    queue = iter(bodies)

    async def connection() -> None:  # one keep-alive connection: a request at a time
        for body in queue:
            await one(body)

    await asyncio.gather(*(connection() for _ in range(in_flight)))
    return statuses


def _collect_like_a_worker() -> None:
    """The garbage collector as a served worker sets it (``service.app``)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def requests(kind: str, count: int, in_flight: int, flush: bool) -> None:
    make = BODIES[kind]
    warm = [make(n) for n in range(max(count // 5, in_flight))]
    bodies = [make(n) for n in range(len(warm), len(warm) + count)]
    with tempfile.TemporaryDirectory() as tmp:
        extra = {} if flush else {"flush_rows": 10**9, "max_buffer_rows": 10**9}
        settings = Settings(data_dir=Path(tmp), flush_interval_s=3600, **extra)  # type: ignore[arg-type]
        app = create_app(settings)
        async with app.api.router.lifespan_context(app.api):
            _collect_like_a_worker()
            await _run(app, PATHS[kind], warm, in_flight)
            mark("warm-up")
            started = time.thread_time()
            statuses = await _run(app, PATHS[kind], bodies, in_flight)
            elapsed = time.thread_time() - started
            mark(f"{count} {kind} requests")
    assert set(statuses) == {202}, set(statuses)
    print(f"{kind}: {elapsed / count * 1e6:.1f} CPU us/request of the event loop's thread")


def main(argv: list[str]) -> None:
    flush = "--flush" in argv
    args = [a for a in argv if a != "--flush"]
    if args and args[0] == "stages":
        from ops.profile_stages import stages

        stages(int(args[1]) if len(args) > 1 else 200)
        return
    kind = args[1] if len(args) > 1 else "batch"
    count = int(args[2]) if len(args) > 2 else (200 if kind != "single" else 4000)
    in_flight = int(args[3]) if len(args) > 3 else (2 if kind != "single" else 32)
    asyncio.run(requests(kind, count, in_flight, flush))


if __name__ == "__main__":
    main(sys.argv[1:])
