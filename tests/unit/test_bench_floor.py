"""The benchmark's floor app (``ops.bench_noop:durable``) does the write path's own work:
a reading is parsed, checked and in its log before the 202, and a bad one is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ops import bench_noop
from ops.profile_writes import batch_body, single_body
from service.storage.wal import decode_frames


def call(path: str, body: bytes) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path}
    asyncio.run(bench_noop.durable(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


@pytest.fixture
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HR_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(bench_noop, "_LOG", [])
    return tmp_path / "floor"


def logged(directory: Path) -> list[tuple[str, int, float]]:
    (path,) = directory.glob("wal-*.log")
    frames, used = decode_frames(path.read_bytes())
    assert used == path.stat().st_size
    return [
        (user, ts, value)
        for frame in frames
        for user, ts, value in zip(frame.rows.user_id, frame.rows.ts, frame.rows.value, strict=True)
    ]


def test_readings_are_in_the_log_before_the_answer(log_dir: Path) -> None:
    status, answer = call("/metrics/heart-rate/batch", batch_body(0, size=50))
    assert status == 202
    assert json.loads(answer)["accepted"] == 50
    readings = json.loads(batch_body(0, size=50))["readings"]
    assert [user for user, _, _ in logged(log_dir)] == [r["user_id"] for r in readings]

    status, answer = call("/metrics/heart-rate", single_body(7))
    assert status == 202
    assert json.loads(answer) == {"status": "accepted"}
    assert logged(log_dir)[-1][0] == json.loads(single_body(7))["user_id"]


def test_a_bad_reading_is_refused_and_not_logged(log_dir: Path) -> None:
    bad = json.loads(single_body(1))
    bad["heart_rate"] = 900
    assert call("/metrics/heart-rate", json.dumps(bad).encode())[0] == 400
    assert not log_dir.exists()
