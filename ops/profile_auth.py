"""What access control costs a single POST, in-process: the served ASGI app called in a
loop (no sockets, no HTTP parsing), with access control off, ``auto`` on loopback with no
key (the layer installed, waiting for a first key), and on with a key sent and checked.

``.venv/bin/python -m ops.profile_auth [requests per round] [rounds] 2>/dev/null``

The figure over HTTP, with the rest of a request, is ``ops/bench_auth.py``'s.

Requests go 64 at a time (group commit then batches them, as under load). Rounds
alternate between the variants, so a slower stretch of a busy machine hits each; the
median round of each is reported, in CPU microseconds per request of the event loop's
thread (where the layer runs; the commit threads' work does not depend on it, and left
out it leaves less noise). Durability ``none``
keeps fsync out of the figure: the smaller the rest of the request, the larger the layer's
share. Each variant writes to a data directory of its own under a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from service.app import ServiceApp, create_app
from service.auth import keys
from service.config import Settings

VARIANTS = ("off", "auto, no key", "on, key sent")
CONCURRENCY = 64  # requests in flight, as ops/bench's single-POST phase has connections


def _headers(length: int, secret: str | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
    ]
    if secret is not None:
        headers.append((b"authorization", f"Bearer {secret}".encode()))
    return headers


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/metrics/heart-rate",
        "raw_path": b"/metrics/heart-rate",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _round(app: ServiceApp, bodies: list[bytes], secret: str | None) -> float:
    statuses: list[int] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[call-overload]

    headers = _headers(len(bodies[0]), secret)  # every body has the same length

    async def one(body: bytes) -> None:
        message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> dict[str, object]:
            return message

        await app(_scope(headers), receive, send)

    started = time.thread_time()
    for at in range(0, len(bodies), CONCURRENCY):
        await asyncio.gather(*(one(body) for body in bodies[at : at + CONCURRENCY]))
    elapsed = time.thread_time() - started
    assert set(statuses) == {202}, set(statuses)
    return elapsed / len(bodies) * 1e6


def _app(root: Path, variant: str) -> tuple[ServiceApp, str | None]:
    data = root / variant.replace(",", "").replace(" ", "-")
    secret = None
    if variant.startswith("on"):
        secret = keys.create(data, "bench", ["ingest"], [], 5)
    auth = "off" if variant == "off" else "auto" if variant.startswith("auto") else "on"
    settings = Settings(data_dir=data, durability="none", flush_interval_s=3600, auth=auth)  # type: ignore[arg-type]
    return create_app(settings), secret


async def main(per_round: int, rounds: int, only: str = "") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        apps = {v: _app(Path(tmp), v) for v in VARIANTS if only in ("", v)}
        results: dict[str, list[float]] = {v: [] for v in VARIANTS}
        async with contextlib.AsyncExitStack() as stack:
            for app, _ in apps.values():
                await stack.enter_async_context(app.api.router.lifespan_context(app.api))
            await _rounds(apps, results, per_round, rounds)
    if not only:
        _report(results, per_round, rounds)


async def _rounds(
    apps: dict[str, tuple[ServiceApp, str | None]],
    results: dict[str, list[float]],
    per_round: int,
    rounds: int,
) -> None:
    seq = 0
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for variant, (app, secret) in apps.items():
            bodies = []
            for _ in range(per_round):
                seq += 1
                ts = f"2024-01-15T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}Z"
                bodies.append(
                    b'{"user_id":"u%03d","device_id":"device_a","timestamp":"%s","heart_rate":72}'
                    % (seq % 1000, ts.encode())
                )
            results[variant].append(await _round(app, bodies, secret))


def _report(results: dict[str, list[float]], per_round: int, rounds: int) -> None:
    base = statistics.median(results["off"][1:])
    for variant, values in results.items():
        median = statistics.median(values[1:])
        print(
            f"{variant:>14}: {median:6.1f} CPU us/request (median of {rounds} rounds of "
            f"{per_round}), {100 * (median / base - 1):+5.1f}% against off",
            file=sys.stdout,
        )


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:3]] or [2000, 7]
    asyncio.run(main(*counts, *sys.argv[3:4]))
