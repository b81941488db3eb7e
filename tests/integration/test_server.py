"""Against real gunicorn: cross-worker reads, graceful stop, kill -9, metrics."""

from __future__ import annotations

import http.client
import os
import random
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.server import Server
from service.storage.wal import list_segments
from tests.integration.conftest import request, wait_until

pytestmark = pytest.mark.integration

BASE = 1_705_312_800  # 2024-01-15T10:00:00Z, seconds
PATH = "/metrics/heart-rate"


def stamp(minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE + 60 * minute))


def reading(user: str, minute: int, value: float) -> dict[str, object]:
    return {
        "user_id": user,
        "device_id": "device_a",
        "timestamp": stamp(minute),
        "heart_rate": value,
    }


def series(server: Server, user: str, minutes: int = 40_000) -> dict[str, float]:
    query = urlencode({"user_id": user, "start": stamp(0), "end": stamp(minutes)})
    status, _, body = request(server, "GET", f"{PATH}?{query}")
    if status == 404:
        return {}
    assert status == 200, body
    data = body["data"]  # type: ignore[index]
    stamps = [b["timestamp"] for b in data]
    assert len(stamps) == len(set(stamps)), "a bucket appears twice"
    return {b["timestamp"]: b["heart_rate"] for b in data}


def wal_segments(data_dir: Path) -> dict[str, list[Path]]:
    return list_segments(data_dir / "wal") if (data_dir / "wal").exists() else {}


def test_a_reading_acked_by_one_worker_is_read_by_the_other(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_INTERVAL_S="3600")
    crossings = 0
    for i in range(400):
        status, headers, _ = request(server, "POST", PATH, reading("raw", i, 60 + i % 100))
        assert status == 202
        query = urlencode({"user_id": "raw", "start": stamp(i), "end": stamp(i + 1)})
        status, read_headers, body = request(server, "GET", f"{PATH}?{query}")
        assert status == 200, (i, body)
        assert body["data"] == [
            {"timestamp": stamp(i), "heart_rate": float(60 + i % 100), "device_id": "device_a"}
        ]
        crossings += headers["x-served-by"] != read_headers["x-served-by"]
        if crossings >= 10:
            break
    assert crossings >= 10, "requests never crossed workers"


def test_sigterm_flushes_every_buffer(server_factory, tmp_path: Path) -> None:
    server = server_factory(workers=2, HR_FLUSH_INTERVAL_S="3600", HR_FLUSH_ROWS="1000000")
    served = set()
    for i in range(60):
        status, headers, _ = request(server, "POST", PATH, reading("term", i, 70))
        assert status == 202
        served.add(headers["x-served-by"])
    status, _, _ = request(
        server,
        "POST",
        PATH + "/batch",
        {"readings": [reading("term", 60 + i, 80) for i in range(40)]},
    )
    assert status == 202
    assert len(served) == 2, "both workers should hold unflushed rows"
    assert sum(len(p) for p in wal_segments(server.data_dir).values()) >= 2
    assert server.stop(signal.SIGTERM) == 0
    assert wal_segments(server.data_dir) == {}
    manifest = (server.data_dir / "manifest.json").read_text()
    assert manifest.count('"name"') >= 2
    again = server_factory(workers=2, data_dir=server.data_dir)
    assert len(series(again, "term")) == 100


def ingest(
    server: Server,
    user: str,
    start: int,
    count: int,
    acked: dict[str, float],
    attempted: dict[str, float],
    stop: threading.Event,
    batch: int,
) -> None:
    """Send unique readings, one minute apart; remember which were acknowledged."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    minute = start
    while minute < start + count and not stop.is_set():
        size = batch if batch else 1
        items = [reading(user, m, float(30 + (m * 7) % 190)) for m in range(minute, minute + size)]
        for item in items:
            attempted[str(item["timestamp"])] = float(item["heart_rate"])  # type: ignore[arg-type]
        try:
            if batch:
                status, _, _ = request(server, "POST", PATH + "/batch", {"readings": items}, conn)
            else:
                status, _, _ = request(server, "POST", PATH, items[0], conn)
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            continue  # not acknowledged: send the same readings again
        if status == 202:
            for item in items:
                acked[str(item["timestamp"])] = float(item["heart_rate"])  # type: ignore[arg-type]
            minute += size
    conn.close()


def run_load(server: Server, per_user: int, during, *, then_stop: bool) -> list[tuple[dict, dict]]:
    """Four senders (two single, two batch) while ``during`` runs; with ``then_stop`` they
    stop when it returns, else they finish their ``per_user`` readings."""
    stop = threading.Event()
    results = [({}, {}) for _ in range(4)]
    threads = [
        threading.Thread(
            target=ingest,
            args=(server, f"load{u}", 0, per_user, *results[u], stop, 25 if u % 2 else 0),
        )
        for u in range(4)
    ]
    for t in threads:
        t.start()
    try:
        during(results)
    finally:
        if then_stop:
            stop.set()
        for t in threads:
            t.join(240)
    assert not any(t.is_alive() for t in threads)
    return results


def check_results(server: Server, results: list[tuple[dict, dict]]) -> None:
    for u, (acked, attempted) in enumerate(results):
        got = series(server, f"load{u}")
        missing = [ts for ts in acked if got.get(ts) != acked[ts]]
        assert not missing, f"load{u}: {len(missing)} acknowledged readings lost"
        assert set(got) <= set(attempted), f"load{u}: buckets nobody sent"


def test_kill_9_of_a_worker_mid_ingestion_loses_no_acknowledged_reading(server_factory) -> None:
    server = server_factory(
        workers=2, HR_FLUSH_ROWS="300", HR_FLUSH_INTERVAL_S="0.5", HR_RECOVERY_INTERVAL_S="0.5"
    )
    victims: list[int] = []

    def kill_one(results) -> None:
        wait_until(lambda: sum(len(a) for a, _ in results) > 1500, 120, "ingestion to run")
        victim = random.choice(server.worker_pids())
        victims.append(victim)
        os.kill(victim, signal.SIGKILL)

    results = run_load(server, 3000, kill_one, then_stop=False)
    assert sum(len(a) for a, _ in results) == 4 * 3000
    wait_until(
        lambda: len(server.worker_pids()) == 2 and victims[0] not in server.worker_pids(),
        60,
        "gunicorn to replace the worker",
    )
    check_results(server, results)
    wait_until(
        lambda: not [w for w in wal_segments(server.data_dir) if w.startswith(f"{victims[0]}x")],
        60,
        "the dead worker's WAL to be replayed",
    )
    check_results(server, results)


def test_kill_9_of_the_whole_server_loses_no_acknowledged_reading(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_ROWS="500", HR_FLUSH_INTERVAL_S="1")

    def kill_all(results) -> None:
        wait_until(lambda: sum(len(a) for a, _ in results) > 1000, 120, "ingestion to run")
        pids = server.worker_pids()
        os.kill(server.proc.pid, signal.SIGKILL)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        server.proc.wait(30)

    stopped = threading.Event()

    def during(results) -> None:
        kill_all(results)
        stopped.set()

    results = run_load(server, 100_000, during, then_stop=True)
    assert stopped.is_set()
    killed = set(wal_segments(server.data_dir))
    assert killed, "the killed workers left WAL behind"
    again = server_factory(workers=2, data_dir=server.data_dir)
    check_results(again, results)
    wait_until(
        lambda: not killed & set(wal_segments(server.data_dir)), 60, "WAL replay at start-up"
    )
    check_results(again, results)


def scrape(server: Server) -> dict[str, float]:
    status, _, text = request(server, "GET", "/metrics")
    assert status == 200
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(str(text)):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_metrics_add_up_across_workers(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_INTERVAL_S="0.2")
    served = set()
    for i in range(40):
        status, headers, _ = request(server, "POST", PATH, reading("m", i, 70))
        assert status == 202
        served.add(headers["x-served-by"])
    for i in range(10):
        status, _, _ = request(server, "POST", PATH, reading("m", i, 500))
        assert status == 400
    status, _, _ = request(
        server,
        "POST",
        PATH + "/batch",
        {"readings": [reading("m", 100 + i, 70) for i in range(5)] + [reading("m", 0, 10)]},
    )
    assert status == 202
    assert len(served) == 2
    totals = scrape(server)
    assert totals["hr_readings_accepted_total"] == 45
    assert totals["hr_readings_rejected_total"] == 11
    assert totals["hr_read_after_write_lag_seconds_count"] == 41  # one per accepted request
    wait_until(lambda: scrape(server).get("hr_flush_rows_total", 0) >= 45, 30, "flushes")
    assert scrape(server).get("hr_buffer_rows", -1) == 0


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _sockets_of(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def test_connections_are_spread_over_the_workers(server_factory) -> None:
    server = server_factory(workers=2)
    listening = _listening_inodes(server.port)
    workers = server.worker_pids()
    held = {pid: _sockets_of(pid) & listening for pid in workers}
    # one listening socket per worker, its own; the master accepts nothing
    assert all(len(sockets) == 1 for sockets in held.values()), held
    assert len(set().union(*held.values())) == len(workers) == len(listening)
    assert not _sockets_of(server.proc.pid) & listening
    assert server.log.read_text().count(f"listening at: {server.url}") == len(workers)
    # a burst of connections, like a load generator's: each worker gets a fair share
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(64)]
    try:
        threads = [threading.Thread(target=c.connect) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        served: dict[str, int] = {}
        for c in conns:
            _, headers, _ = request(server, "GET", "/health", conn=c)
            served[headers["x-served-by"]] = served.get(headers["x-served-by"], 0) + 1
    finally:
        for c in conns:
            c.close()
    assert len(served) == 2, served
    assert min(served.values()) >= 12, served  # 64 fair coin flips: below 12 ~ 1 in 10^7
