"""Against real gunicorn: two servers sharing one Delta table on an S3 endpoint (moto).

Each server has its own data dir (WAL, buffer) and two workers; the table is the only
thing they share. moto is slow (up to a second a contended commit): these tests check
correctness, not speed.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ops.bench_table import moto_endpoint
from ops.server import Server, free_port
from tests.integration.conftest import request, wait_until
from tests.integration.test_server import BASE, PATH, reading, series, stamp, wal_segments
from tests.integration.test_stream import EventReader, post
from tests.integration.test_stream import minute as minute_label

pytestmark = pytest.mark.integration

BUCKET = "health"
MOTO_COMMIT_S = 1.0  # moto takes up to this long per contended commit


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A moto S3 endpoint on a free port with one bucket; the servers' environment."""
    with moto_endpoint(tmp_path / "moto.log", BUCKET) as endpoint:
        yield {
            "HR_STORE": "delta",
            "HR_TABLE_URI": f"s3://{BUCKET}/readings",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
        }


def table(env: dict[str, str]) -> pl.DataFrame:
    """Every row of the shared table, read from outside the service."""
    options = {k: v for k, v in env.items() if k.startswith("AWS_")}
    return pl.scan_delta(env["HR_TABLE_URI"], storage_options=options).collect()


def one(server: Server, user: str, minute: int) -> float | None:
    return series(server, user).get(stamp(minute))


def test_readings_posted_to_either_server_are_answered_by_both(server_factory, s3, tmp_path):
    flow = {**s3, "HR_FLUSH_INTERVAL_S": "0.5"}
    a = server_factory(workers=2, data_dir=tmp_path / "a", **flow)
    b = server_factory(workers=2, data_dir=tmp_path / "b", **flow)
    assert request(a, "POST", PATH, reading("both", 0, 61))[0] == 202
    assert one(a, "both", 0) == 61  # its own reading at once, from its WAL or buffer
    assert request(b, "POST", PATH, reading("both", 1, 62))[0] == 202
    assert one(b, "both", 1) == 62
    many = {"readings": [reading("many", m, 70 + m % 50) for m in range(300)]}
    assert request(b, "POST", PATH + "/batch", many)[0] == 202
    expected = {stamp(0): 61.0, stamp(1): 62.0}
    for server in (a, b):
        wait_until(lambda s=server: series(s, "both") == expected, 60, "the other's flush")
        wait_until(lambda s=server: len(series(s, "many")) == 300, 60, "the batch's flush")
    rows = table(s3)
    assert rows.height == 302
    assert set(rows["metric"]) == {"heart_rate"}


def send(server: Server, user: str, acked: set[int], sent: set[int], stop: threading.Event):
    """Batches of 20 new readings until ``stop``; a failed batch is never sent again, so
    every row of ``user`` in the table comes from exactly one acknowledged-or-lost POST."""
    minute = 0
    while not stop.is_set():
        minutes = range(minute, minute + 20)
        minute += 20
        sent.update(minutes)
        body = {"readings": [reading(user, m, 40 + m % 150) for m in minutes]}
        try:
            status, _, _ = request(server, "POST", PATH + "/batch", body)
        except (OSError, http.client.HTTPException):
            stop.wait(0.05)
            continue
        if status == 202:
            acked.update(minutes)


def test_kill_9_of_a_whole_server_keeps_every_acknowledged_reading_once(
    server_factory, s3, tmp_path
):
    flow = {**s3, "HR_FLUSH_INTERVAL_S": "0.3", "HR_FLUSH_ROWS": "200"}
    server = server_factory(workers=2, data_dir=tmp_path / "a", **flow)
    users = ["k0", "k1"]
    acked: dict[str, set[int]] = {u: set() for u in users}
    sent: dict[str, set[int]] = {u: set() for u in users}
    stop = threading.Event()
    threads = [
        threading.Thread(target=send, args=(server, u, acked[u], sent[u], stop)) for u in users
    ]
    for t in threads:
        t.start()
    try:
        # by then several flushes have committed (200 rows or 0.3 s each)
        wait_until(lambda: sum(map(len, acked.values())) >= 1200, 120, "ingestion to run")
        pids = server.worker_pids()
        os.kill(server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        server.proc.wait(30)  # type: ignore[union-attr]
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    killed = set(wal_segments(server.data_dir))
    assert killed, "the killed workers left WAL behind"
    again = server_factory(workers=2, data_dir=server.data_dir, **flow)
    wait_until(lambda: not killed & set(wal_segments(again.data_dir)), 60, "WAL replay")
    rows = table(s3)
    for user in users:
        minutes = (
            rows.filter(pl.col("user_id") == user)
            .select((pl.col("ts").dt.epoch("s") - BASE) // 60)
            .to_series()
            .to_list()
        )
        assert len(minutes) == len(set(minutes)), f"{user}: a reading is in the table twice"
        assert acked[user] <= set(minutes), f"{user}: acknowledged readings are missing"
        assert set(minutes) <= sent[user], f"{user}: readings nobody sent"
        got = series(again, user, minutes=max(sent[user]) + 1)
        assert {stamp(m) for m in acked[user]} <= set(got)


def test_a_delta_store_without_a_table_uri_does_not_start(server_factory, tmp_path):
    with pytest.raises(RuntimeError, match="exited at start-up") as failed:
        server_factory(workers=1, data_dir=tmp_path / "a", HR_STORE="delta")
    assert "Not starting: HR_STORE=delta needs HR_TABLE_URI" in str(failed.value)


def test_a_table_on_an_unreachable_store_stops_the_workers_at_start(server_factory, tmp_path):
    env = {
        "HR_STORE": "delta",
        "HR_TABLE_URI": f"s3://{BUCKET}/readings",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    with pytest.raises(RuntimeError, match="exited at start-up") as failed:
        server_factory(workers=1, data_dir=tmp_path / "a", **env)
    assert "TableRefused: the table at s3://health/readings cannot be used" in str(failed.value)


def test_an_erase_on_one_server_removes_the_user_from_the_table_and_the_other_server(
    server_factory, s3, tmp_path
):
    flow = {**s3, "HR_FLUSH_INTERVAL_S": "0.5", "HR_RECOVERY_INTERVAL_S": "0.5"}
    a = server_factory(workers=2, data_dir=tmp_path / "a", **flow)
    b = server_factory(workers=2, data_dir=tmp_path / "b", **flow)
    for server, minute in ((a, 0), (b, 1)):
        for user in ("gone", "kept"):
            assert request(server, "POST", PATH, reading(user, minute, 60 + minute))[0] == 202
    for server in (a, b):
        wait_until(lambda s=server: len(series(s, "gone")) == 2, 60, "both servers' flushes")
    time.sleep(1)  # upkeep has looked for shared erasures (none yet): still ready
    assert request(b, "GET", "/ready")[0] == 200
    assert request(b, "POST", PATH, reading("gone", 2, 62))[0] == 202  # maybe still buffered
    status, _, receipt = request(a, "DELETE", "/users/gone")
    assert status == 200, receipt
    assert series(a, "gone") == {}  # at once on the erasing server
    wait_until(lambda: series(b, "gone") == {}, 30, "the other server to import the erasure")
    rows = lambda: table(s3)  # noqa: E731
    wait_until(lambda: "gone" not in set(rows()["user_id"]), 60, "the erased rows to go")
    assert series(b, "kept") == {stamp(0): 60.0, stamp(1): 61.0}
    assert sorted(rows().filter(pl.col("user_id") == "kept")["value"]) == [60.0, 61.0]
    time.sleep(2)  # b's later flushes and upkeep do not bring a row back
    assert "gone" not in set(rows()["user_id"])
    assert series(a, "gone") == series(b, "gone") == {}


def test_users_and_streams_of_one_server_see_readings_posted_to_the_other(
    server_factory, s3, tmp_path
):
    flow = {**s3, "HR_FLUSH_INTERVAL_S": "0.5"}
    a = server_factory(workers=2, data_dir=tmp_path / "a", **flow)
    b = server_factory(workers=2, data_dir=tmp_path / "b", **flow)
    recent = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    stream = EventReader(b.port, "user_id=live")  # no reading in the last hour: no event yet
    try:
        started = time.monotonic()
        post(a, "live", recent, 77)
        event = stream.event(timeout_s=20)
        waited = time.monotonic() - started
        assert event["timestamp"] == minute_label(recent)
        assert event["heart_rate"] == 77.0
        assert waited < 0.5 + 3.0 + MOTO_COMMIT_S, f"the bucket came after {waited:.1f} s"
    finally:
        stream.close()
    assert request(a, "POST", PATH, reading("listed", 0, 60))[0] == 202
    started = time.monotonic()
    wait_until(lambda: "listed" in users(b), 30, "b to list a's user")
    assert time.monotonic() - started < 0.5 + 3.0 + MOTO_COMMIT_S
    assert users(b) == users(a) == ["listed", "live"]
    page = request(b, "GET", "/users?prefix=li&after=listed")[2]
    assert page == {"users": ["live"], "next": None}


def users(server: Server) -> list[str]:
    status, _, body = request(server, "GET", "/users")
    assert status == 200, body
    return list(body["users"])  # type: ignore[index]
