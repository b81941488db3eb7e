"""``ops/soak`` says what a run's refused writes and logged problems were."""

from __future__ import annotations

import json
from pathlib import Path

from ops.soak import problems


def test_refused_writes_and_warnings_are_counted_from_the_log(tmp_path: Path) -> None:
    def access(method: str, route: str, status: int) -> dict[str, object]:
        return {
            "level": "info",
            "logger": "service.access",
            "method": method,
            "route": route,
            "status": status,
            "message": f"{method} {route} {status}",
        }

    entries = [
        access("POST", "/metrics/heart-rate", 202),
        access("POST", "/metrics/steps/batch", 503),
        access("POST", "/metrics/steps/batch", 503),
        access("POST", "/readings", 400),
        access("GET", "/metrics/heart-rate", 404),  # not a write
        {"level": "warning", "logger": "service.live", "message": "a stream of 12 fell behind"},
        {"level": "warning", "logger": "service.live", "message": "a stream of 7 fell behind"},
        {"level": "info", "logger": "service.ingest", "message": "flushed 25000 rows"},
        {"level": "error", "logger": "service.ingest", "message": "flush failed"},
    ]
    log = tmp_path / "service.log"
    lines = [json.dumps(entry, separators=(",", ":")) for entry in entries]
    log.write_text("\n".join([*lines, "not json", "[gunicorn] plain text"]) + "\n")

    answers, logged = problems(log)
    assert answers == {"503 POST /metrics/steps/batch": 2, "400 POST /readings": 1}
    assert logged == {
        "warning service.live: a stream of N fell behind": 2,
        "error service.ingest: flush failed": 1,
    }
