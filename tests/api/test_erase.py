"""DELETE /users/<user_id> over in-process ASGI: the receipt, 404 afterwards, other users
intact, readings sent after the erase kept, and no file holding an erased row."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
from starlette.testclient import TestClient

from service.schema import ROW_SCHEMA
from service.storage.compaction import compact_all
from service.storage.wal import list_segments, read_segment
from tests.conftest import context, flush

DAY = {"start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}
STEMS = ("heart-rate", "steps", "calories")


def records(user: str, minutes: range, device: str = "device_a") -> list[dict[str, object]]:
    return [
        {
            "user_id": user,
            "device_id": device,
            "timestamp": f"2024-01-15T10:{m:02d}:00Z",
            "heart_rate": 60 + m,
            "steps": m,
            "calories": 1.5,
        }
        for m in minutes
    ]


def post(c: TestClient, body: list[dict[str, object]]) -> None:
    r = c.post("/readings", json=body)
    assert r.status_code == 202, r.text


def answers(c: TestClient, user: str) -> list[tuple[int, object]]:
    """Every metric's series and the summary of ``user`` for DAY."""
    found = []
    for stem in STEMS:
        r = c.get(f"/metrics/{stem}", params={**DAY, "user_id": user, "stats": "count"})
        found.append((r.status_code, r.json()))
    r = c.get("/summary", params={**DAY, "user_id": user})
    return [*found, (r.status_code, r.json())]


def rows_in_files(data: Path, user: str) -> int:
    """Rows of ``user`` in every Parquet file (day files and rollups) and WAL segment."""
    found = 0
    for path in (data / "fragments").glob("*.parquet"):
        found += pl.read_parquet(path).filter(pl.col("user_id") == user).height
    for segments in list_segments(data / "wal").values():
        for path in segments:
            found += sum(f.rows.user_id.count(user) for f in read_segment(path))
    return found


def test_erase_answers_a_receipt_and_every_read_is_then_404(client: TestClient) -> None:
    ctx = context(client)
    post(client, records("gone", range(0, 20)) + records("kept", range(0, 20)))
    flush(client)
    compact_all(ctx.store)  # compacted day files with rollups
    post(client, records("gone", range(20, 30), "device_b"))  # fragments
    flush(client)
    post(client, records("gone", range(30, 40)) + records("kept", range(30, 40)))  # buffer
    before = answers(client, "kept")
    assert rows_in_files(ctx.settings.data_dir, "gone") > 0

    r = client.delete("/users/gone")
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert set(receipt) == {
        "user_id",
        "erased_at",
        "readings_erased",
        "files_rewritten",
        "files_clean_by",
    }
    assert receipt["user_id"] == "gone"
    assert receipt["readings_erased"] == 40 * 3  # identities, every metric
    assert receipt["files_rewritten"] > 0
    erased_at = datetime.fromisoformat(receipt["erased_at"])
    assert erased_at <= datetime.fromisoformat(receipt["files_clean_by"])

    assert [status for status, _ in answers(client, "gone")] == [404] * 4
    assert answers(client, "kept") == before
    assert client.get("/users").json() == {"users": ["kept"], "next": None}
    assert rows_in_files(ctx.settings.data_dir, "gone") == 0  # the receipt says clean now


def test_readings_sent_after_the_erase_are_kept(client: TestClient) -> None:
    post(client, records("u", range(0, 10)))
    flush(client)
    assert client.delete("/users/u").status_code == 200
    post(client, records("u", range(5, 7)))  # the same identities again, and later ones
    post(client, records("u", range(50, 52)))
    r = client.get("/metrics/steps", params={**DAY, "user_id": "u", "stats": "count"})
    assert r.status_code == 200
    assert [b["timestamp"] for b in r.json()["data"]] == [
        "2024-01-15T10:05:00Z",
        "2024-01-15T10:06:00Z",
        "2024-01-15T10:50:00Z",
        "2024-01-15T10:51:00Z",
    ]
    assert client.get("/users").json()["users"] == ["u"]
    flush(client)
    compact_all(context(client).store)  # a merge keeps them too
    r = client.get("/summary", params={**DAY, "user_id": "u"})
    assert r.json()["steps"]["total"] == 5 + 6 + 50 + 51


def test_erasing_a_user_without_readings_is_a_receipt_of_nothing(client: TestClient) -> None:
    post(client, records("other", range(0, 3)))
    r = client.delete("/users/nobody")
    assert r.status_code == 200
    assert (r.json()["readings_erased"], r.json()["files_rewritten"]) == (0, 0)
    assert answers(client, "other")[0][0] == 200


def test_user_ids_with_a_slash_and_bad_ids(client: TestClient) -> None:
    post(client, records("a/b", range(0, 3)))
    assert client.delete("/users/a%2Fb").status_code == 200
    assert answers(client, "a/b")[0][0] == 404
    r = client.delete("/users/" + "x" * 129)
    assert r.status_code == 400
    assert r.json()["detail"][0]["field"] == "user_id"


def test_a_query_during_the_erase_sees_no_erased_row(client: TestClient, tmp_path: Path) -> None:
    """The reader honours the tombstone alone, before any file is rewritten."""
    from service.storage.erasure import begin

    post(client, records("u", range(0, 10)))
    flush(client)
    ctx = context(client)
    begin(ctx.store, "u")  # the rewrite has not run
    assert (
        pl.scan_parquet(
            [ctx.store.fragment_dir / f.name for f in ctx.store.manifest.read().fragments],
            schema=ROW_SCHEMA,
        )
        .collect()
        .height
    )
    assert [status for status, _ in answers(client, "u")] == [404] * 4
    assert client.get("/users").json()["users"] == []
