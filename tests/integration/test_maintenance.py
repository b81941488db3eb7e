"""ops/maint as its own process: a SIGTERM mid-compaction leaves no trace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from service.maintenance import verify
from service.schema import ROW_SCHEMA
from service.storage.compaction import is_compacting
from service.storage.store import Store
from tests.unit.test_compaction import BASE

pytestmark = pytest.mark.integration


def test_sigterm_stops_a_compaction_process_without_a_trace(tmp_path: Path) -> None:
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    n = 150_000
    for i in range(10):  # 1.5 M rows: a pass takes seconds
        i_ = pl.int_range(0, n, dtype=pl.Int64)
        store.publish(
            {
                "heart_rate": pl.select(
                    ("u" + (i_ % 97).cast(pl.String)).alias("user_id"),
                    pl.lit("device_a").alias("device_id"),
                    pl.from_epoch(BASE + (i_ + i * n) * 500, time_unit="ms")
                    .dt.replace_time_zone("UTC")
                    .alias("ts"),
                    pl.lit(70.0).alias("value"),
                    (i_ + i * n).alias("seq"),
                ).cast(pl.Schema(ROW_SCHEMA))
            }
        )
    before = store.manifest.read()
    command = [sys.executable, "-m", "service.compaction_process", "--data-dir", str(tmp_path)]
    # every day merged down, in small steps: many merges, each one manifest change
    steps = ["--full", "--max-rows", "40000"]
    child = subprocess.Popen([*command, *steps], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not is_compacting(store) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # into the first merge
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=60)
    assert (child.returncode, out) == (128 + signal.SIGTERM, b"")  # stopped mid-pass
    after = store.manifest.read()
    # the merge in progress deleted what it wrote; merges committed before it stay
    listed = {name for f in after.fragments for name in f.files}
    retired = {name for name, _ in after.retired}
    assert {p.name for p in store.fragment_dir.iterdir()} == listed | retired
    assert sum(f.rows for f in after.fragments) == sum(f.rows for f in before.fragments)
    assert not is_compacting(store)
    assert verify(store) == []
