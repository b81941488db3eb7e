"""Against real gunicorn: records of several metrics survive kill -9 of the whole server,
and every worker answers series at any interval and summaries from them."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from urllib.parse import urlencode

import pytest

from ops.server import Server
from tests.integration.conftest import request, wait_until

pytestmark = pytest.mark.integration

BASE = 1_711_836_000  # 2024-03-30T22:00:00Z: the night Berlin's clock springs forward
DAY = ("2024-03-31T00:00:00+01:00", "2024-04-01T00:00:00+02:00")  # 23 hours


def record(i: int) -> dict[str, object]:
    """Record ``i``: one per 10 s from BASE, on a watch; steps every record, calories on even
    ones, heart rate on every third."""
    body: dict[str, object] = {
        "user_id": "walker",
        "device_id": "watch",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE + 10 * i)),
        "steps": i % 7,
    }
    if i % 2 == 0:
        body["calories"] = 0.5
    if i % 3 == 0:
        body["heart_rate"] = 60 + i % 50
    return body


def send(
    server: Server, first: int, stop: threading.Event, sent: list[int], acked: list[int]
) -> None:
    """Batches of 20 records from ``first`` on, each on a new connection (so both workers
    take some), until ``stop``; the indexes of the records sent and of those acknowledged
    go to ``sent`` and ``acked``."""
    i = first
    while not stop.is_set() and i < first + 6_000:
        batch = list(range(i, i + 20))
        sent.extend(batch)
        try:
            status, _, body = request(server, "POST", "/readings", [record(k) for k in batch])
        except (OSError, http.client.HTTPException):
            return  # the server is gone: nothing more is acknowledged
        assert status == 202, body
        assert body["by_metric"]["steps"] == 20  # type: ignore[index]
        acked.extend(batch)
        i += 20


def expected(acked: list[int]) -> dict[str, float]:
    """Berlin-day totals of the acknowledged records (each sent once: no duplicates)."""
    start, end = BASE + 3600, BASE + 3600 + 23 * 3600  # local midnight to midnight
    inside = [i for i in set(acked) if start <= BASE + 10 * i < end]
    return {
        "steps": sum(i % 7 for i in inside),
        "calories": sum(0.5 for i in inside if i % 2 == 0),
        "heart_rate": sum(1 for i in inside if i % 3 == 0),
    }


def day_totals(server: Server) -> dict[str, float]:
    """What every worker answers for the Berlin day: steps and calories per day, heart-rate
    readings counted by the day bucket and by the summary."""
    query = {"user_id": "walker", "start": DAY[0], "end": DAY[1], "tz": "Europe/Berlin"}
    got: dict[str, float] = {}
    for stem, field in (("steps", "steps"), ("calories", "calories")):
        params = urlencode({**query, "interval": "1d"})
        status, _, body = request(server, "GET", f"/metrics/{stem}?{params}")
        assert status == 200, body
        [bucket] = body["data"]  # type: ignore[index]
        assert bucket["timestamp"] == "2024-03-31T00:00:00+01:00"
        got[field] = bucket[field]
    status, _, body = request(server, "GET", "/summary?" + urlencode(query))
    assert status == 200, body
    assert body["steps"]["total"] == got["steps"]  # type: ignore[index]
    got["heart_rate"] = body["heart_rate"]["count"]  # type: ignore[index]
    return got


def test_records_survive_kill_9_of_the_whole_server(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_ROWS="2000", HR_FLUSH_INTERVAL_S="1")
    stop, sent, acked = threading.Event(), [], []
    senders = [
        threading.Thread(target=send, args=(server, k * 6_000, stop, sent, acked)) for k in range(2)
    ]
    for t in senders:
        t.start()
    wait_until(lambda: len(acked) > 3_000, 120, "ingestion to run")
    pids = server.worker_pids()
    os.kill(server.proc.pid, signal.SIGKILL)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    server.proc.wait(30)
    stop.set()
    for t in senders:
        t.join(60)
    again = server_factory(workers=2, data_dir=server.data_dir)
    low, high = expected(acked), expected(sent)
    assert low["steps"] > 0
    # several fresh connections: both workers answer, from WAL replay and fragments alike;
    # every acknowledged record is there, and a record in flight at the kill may be too
    answers = [day_totals(again) for _ in range(4)]
    assert all(a == answers[0] for a in answers)
    for metric, got in answers[0].items():
        assert low[metric] <= got <= high[metric], metric
