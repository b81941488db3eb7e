"""A corrupt data file against real processes: the server answers from the other files
and names it; a compaction process killed mid-merge leaves nothing behind for long."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import polars as pl
import pytest

from ops.server import ROOT
from service.maintenance import verify
from service.schema import DAY_MS, ROW_SCHEMA
from service.storage.compaction import compact
from service.storage.compaction_policy import has_work
from service.storage.store import Store
from service.storage.wal import read_segment
from tests.integration.conftest import request, wait_until
from tests.integration.test_server import PATH, reading, scrape, series, stamp, wal_segments

pytestmark = pytest.mark.integration


def manifest(data_dir: Path) -> dict:
    path = data_dir / "manifest.json"
    return json.loads(path.read_bytes()) if path.exists() else {"fragments": [], "retired": []}


def settled(data_dir: Path, rows: int) -> bool:
    """Every posted row is in a listed fragment and no longer in any WAL."""
    listed = sum(f["rows"] for f in manifest(data_dir)["fragments"])
    in_wal = sum(
        len(frame.rows)
        for paths in wal_segments(data_dir).values()
        for path in paths
        for frame in read_segment(path)
    )
    return listed == rows and in_wal == 0


def test_a_truncated_fragment_is_skipped_named_and_counted(server_factory) -> None:
    server = server_factory(workers=2, HR_FLUSH_INTERVAL_S="0.2", HR_COMPACT_INTERVAL_S="3600")
    first = [reading("q", minute, 70) for minute in range(10)]
    later = [reading("q", minute, 90) for minute in range(100, 110)]
    assert request(server, "POST", PATH + "/batch", {"readings": first})[0] == 202
    wait_until(lambda: settled(server.data_dir, 10), 30, "the first batch in a fragment")
    assert request(server, "POST", PATH + "/batch", {"readings": later})[0] == 202
    wait_until(lambda: settled(server.data_dir, 20), 30, "the second batch in a fragment")
    bad = next(f["name"] for f in manifest(server.data_dir)["fragments"] if f["rows"] == 10)
    path = server.data_dir / "fragments" / bad
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    expected = {stamp(minute): 90.0 for minute in range(100, 110)}
    for _ in range(4):  # whichever worker answers: the other file's rows, never a 500
        assert series(server, "q") == expected
    status, _, body = request(server, "GET", "/ready")
    assert status == 200
    assert body == {"status": "degraded", "quarantined": [bad]}
    assert scrape(server)["hr_quarantined_files_total"] == 1
    assert bad not in {f["name"] for f in manifest(server.data_dir)["fragments"]}
    query = urlencode({"user_id": "q", "start": stamp(0), "end": stamp(10)})
    assert request(server, "GET", f"{PATH}?{query}")[0] == 404  # its rows are gone


def seed(root: Path, users: int = 1000, per_user: int = 100, files: int = 8) -> pl.DataFrame:
    """Level-0 fragments holding ``users * per_user`` distinct readings of one UTC day."""
    day = 1_705_276_800_000  # 2024-01-15T00:00:00Z
    n = users * per_user
    rows = pl.DataFrame(
        {
            "user_id": [f"u{i % users:05d}" for i in range(n)],
            "device_id": "device_a",
            "ts": [day + (i // users) * 60_000 + i % 997 for i in range(n)],
            "value": [float(30 + i % 190) for i in range(n)],
            "seq": list(range(1, n + 1)),
        },
        schema=ROW_SCHEMA,
    )
    store = Store(root, "seed", 10)
    store.ensure_layout()
    for part in range(files):
        store.publish({"heart_rate": rows.gather_every(files, offset=part)})
    assert rows["ts"].dt.epoch("ms").max() < day + DAY_MS  # type: ignore[operator]
    return rows


def unlisted(root: Path) -> set[str]:
    names = {p.name for p in (root / "fragments").iterdir()}  # the directory first
    doc = manifest(root)
    named = {r["name"] for r in doc["retired"]}
    for f in doc["fragments"]:
        stem = f["name"].removesuffix(".parquet")
        named.add(f["name"])
        if f["rollup"]:
            named.add(f"{stem}.rollup.parquet")
        if f.get("spans"):
            named.add(f"{stem}.spans.parquet")
    return names - named


def has_spans(names: set[str]) -> bool:
    return any(name.endswith(".spans.parquet") for name in names)


def kill_mid_merge(
    root: Path, *, full: bool = True, when: Callable[[set[str]], bool] = lambda n: len(n) >= 4
) -> bool:
    """Run a compaction in small merge steps (with ``full``, a day merge that writes many
    files before its one commit) and SIGKILL it once its unlisted files meet ``when``;
    False if it finished first."""
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "service.maintenance", "--data-dir", str(root), "compact"),
            *(("--full",) if full else ()),
            *("--grace-s", "3600", "--max-rows", "1000"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        while child.poll() is None:
            if when(unlisted(root)):
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        status = child.wait(timeout=120)
    return status == -signal.SIGKILL


@pytest.mark.parametrize("phase", ["day merge", "level-0 merge"])
def test_the_pass_after_a_killed_compaction_removes_its_leftovers(
    tmp_path: Path, phase: str
) -> None:
    for attempt in range(5):  # the process may finish before the poll sees its files
        root = tmp_path / f"data{attempt}"
        if phase == "day merge":
            rows = seed(root)
            killed = kill_mid_merge(root)
        else:  # killed between a level-1 file's spans file and the commit listing both
            rows = seed(root, files=64)
            killed = kill_mid_merge(root, full=False, when=has_spans) and has_spans(unlisted(root))
        if killed:
            break
    else:
        pytest.fail("the compaction process always finished before it could be killed")
    store = Store(root, "next", 10)
    leftovers = unlisted(root)
    assert leftovers
    assert any("(orphan)" in problem for problem in verify(store))
    # a killed writer's files are removed once older than the grace period: age them
    hour_ago = time.time() - 3600
    for path in (root / "fragments").iterdir():
        os.utime(path, (hour_ago, hour_ago))
    assert has_work(store, min_files=1_000_000, grace_s=1800)  # only the orphans are due
    report = compact(store, force=True, grace_s=0)
    assert report is not None
    assert report.orphans == len(leftovers)
    assert not unlisted(root) & leftovers
    assert verify(store) == []
    listed = [root / "fragments" / f.name for f in store.manifest.read().fragments]
    stored = pl.read_parquet(listed, schema=ROW_SCHEMA)
    key = ["user_id", "device_id", "ts"]
    assert stored.height == rows.height  # every reading exactly once
    assert stored.sort(key).equals(rows.sort(key))
