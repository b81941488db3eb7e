"""GET /users over in-process ASGI: every user with a stored reading, sorted, paginated."""

from __future__ import annotations

import polars as pl
import pytest
from starlette.testclient import TestClient

from service.schema import Rows, rows_frame
from service.storage.compaction import compact
from service.storage.quarantine import quarantined
from service.storage.wal import SegmentWriter, encode_frame, segment_path
from tests.conftest import context, flush

HR = "/metrics/heart-rate"


def post(c: TestClient, *users: str, ts: str = "2024-01-15T10:00:00Z") -> None:
    body = {
        "readings": [
            {"user_id": u, "device_id": "device_a", "timestamp": ts, "heart_rate": 70}
            for u in users
        ]
    }
    r = c.post(HR + "/batch", json=body)
    assert r.status_code == 202, r.text


def page(c: TestClient, **params: str | int) -> tuple[list[str], str | None]:
    r = c.get("/users", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"users", "next"}
    return body["users"], body["next"]


def walk(c: TestClient, limit: int, **params: str) -> list[str]:
    """Every user, page by page, following ``next`` until it is null."""
    seen: list[str] = []
    after: dict[str, str] = {}
    for _ in range(1000):
        users, nxt = page(c, limit=limit, **params, **after)
        assert len(users) <= limit
        seen += users
        if nxt is None:
            return seen
        assert nxt == users[-1]
        assert len(users) == limit
        after = {"after": nxt}
    raise AssertionError("next never became null")


def test_no_readings_is_an_empty_list(client: TestClient) -> None:
    assert page(client) == ([], None)


def test_users_are_sorted_and_distinct(client: TestClient) -> None:
    post(client, "u2", "u10", "u1", "u2", "b", "ü")
    post(client, "u1", ts="2024-01-16T10:00:00Z")
    assert page(client) == (["b", "u1", "u10", "u2", "ü"], None)  # code point order


def test_walking_next_lists_every_user_once(client: TestClient) -> None:
    users = [f"user{i:04d}" for i in range(253)]
    post(client, *users[::2])
    flush(client)
    post(client, *users[1::2])
    got = walk(client, limit=10)
    assert got == sorted(users)
    assert page(client) == (sorted(users)[:100], sorted(users)[99])  # the default limit


def test_a_last_full_page_has_no_next(client: TestClient) -> None:
    post(client, *(f"u{i}" for i in range(6)))
    assert page(client, limit=3) == (["u0", "u1", "u2"], "u2")
    assert page(client, limit=3, after="u2") == (["u3", "u4", "u5"], None)
    assert page(client, limit=6) == ([f"u{i}" for i in range(6)], None)
    assert page(client, limit=5) == ([f"u{i}" for i in range(5)], "u4")


def test_after_need_not_be_a_user(client: TestClient) -> None:
    post(client, "a", "c", "e")
    assert page(client, after="b") == (["c", "e"], None)
    assert page(client, after="e") == ([], None)
    assert page(client, after="0") == (["a", "c", "e"], None)


def test_prefix_selects_users_starting_with_it(client: TestClient) -> None:
    post(client, "a", "ab", "abc", "abd", "ac", "b", "ab\u00e9")
    flush(client)
    post(client, "abz", "aa")
    assert page(client, prefix="ab") == (["ab", "abc", "abd", "abz", "ab\u00e9"], None)
    assert page(client, prefix="ab", limit=2) == (["ab", "abc"], "abc")
    assert page(client, prefix="ab", after="abc") == (["abd", "abz", "ab\u00e9"], None)
    assert page(client, prefix="ab", after="a") == (["ab", "abc", "abd", "abz", "ab\u00e9"], None)
    assert page(client, prefix="ab", after="b") == ([], None)
    assert page(client, prefix="x") == ([], None)
    everyone = ["a", "aa", "ab", "abc", "abd", "abz", "ab\u00e9", "ac"]
    assert walk(client, limit=1, prefix="a") == everyone


def test_users_from_buffer_files_and_compacted_files_together(client: TestClient) -> None:
    post(client, "flushed", "both")
    post(client, "other-day", ts="2024-01-17T10:00:00Z")
    flush(client)
    post(client, "compacted")
    flush(client)
    assert page(client) == (["both", "compacted", "flushed", "other-day"], None)
    assert compact(context(client).store, force=True, grace_s=3600) is not None
    assert all(f.level > 0 for f in context(client).store.manifest.read().fragments)
    post(client, "buffered", "both")
    assert page(client) == (["both", "buffered", "compacted", "flushed", "other-day"], None)


def test_users_in_another_workers_wal_are_listed(client: TestClient) -> None:
    post(client, "mine")
    rows = Rows(["theirs"], ["device_a"], [1_705_312_800_000], [70.0])
    writer = SegmentWriter(segment_path(context(client).store.wal_dir, "other", 1))
    writer.append(encode_frame("heart_rate", 1, rows))
    writer.close()
    assert page(client) == (["mine", "theirs"], None)


def test_users_of_every_metric_are_listed(client: TestClient) -> None:
    post(client, "hr-user")
    frame = rows_frame(Rows(["steps-user"], ["device_a"], [1_705_312_800_000], [100.0]), [1])
    context(client).store.publish({"steps": frame})  # a metric the route table lacks yet
    assert page(client) == (["hr-user", "steps-user"], None)


def test_an_unreadable_file_is_quarantined_and_the_rest_answer(client: TestClient) -> None:
    post(client, "kept")
    flush(client)
    post(client, "lost")
    flush(client)
    store = context(client).store
    bad = store.manifest.read().fragments[-1].name
    path = store.fragment_dir / bad
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    post(client, "fresh")
    assert page(client) == (["fresh", "kept"], None)
    assert bad in quarantined(store.root)
    assert bad not in {f.name for f in store.manifest.read().fragments}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("limit=1.5", "limit"),
        ("limit=%D9%A3", "limit"),  # an Arabic-Indic digit: a digit, not an ASCII one
        ("limit=1&limit=2", "limit"),
        ("after=", "after"),
        ("after=" + "x" * 129, "after"),
        ("after=a%00b", "after"),
        ("prefix=", "prefix"),
        ("prefix=%E2%80%A8", "prefix"),  # a line separator
        ("prefix=" + "x" * 129, "prefix"),
        ("user_id=u", "user_id"),
        ("limit=5&cursor=u", "cursor"),
    ],
)
def test_bad_parameters_are_400_naming_them(client: TestClient, query: str, field: str) -> None:
    r = client.get("/users?" + query)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    assert [d["field"] for d in body["detail"]] == [field]


def test_limits_at_the_bounds_are_accepted(client: TestClient) -> None:
    post(client, "u")
    assert page(client, limit=1) == (["u"], None)
    assert page(client, limit=1000) == (["u"], None)
    assert page(client, after="x" * 128, prefix="x" * 128) == ([], None)


def test_openapi_documents_the_route_without_422(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/users"]["get"]
    # a 503 while the worker starts or stops is any route's, in the document's description
    assert set(op["responses"]) == {"200", "400"}
    assert {p["name"] for p in op["parameters"]} == {"limit", "after", "prefix"}
    example = op["responses"]["200"]["content"]["application/json"]["example"]
    assert example == {"users": ["u1", "u2"], "next": "u2"}


def test_the_user_list_is_not_read_from_every_file_each_time(client: TestClient) -> None:
    post(client, "a")
    flush(client)
    post(client, "b")
    flush(client)
    assert page(client) == (["a", "b"], None)
    store = context(client).store
    files = [store.fragment_dir / f.name for f in store.manifest.read().fragments]
    saved = [pl.read_parquet(p) for p in files]
    for p in files:
        p.unlink()  # as if unreadable: a cached answer never opens them again
    assert page(client) == (["a", "b"], None)
    assert quarantined(store.root) == {}
    for p, frame in zip(files, saved, strict=True):
        frame.write_parquet(p)


def test_users_flushed_after_a_listing_join_it(client: TestClient) -> None:
    post(client, "b", "d")
    flush(client)
    assert page(client) == (["b", "d"], None)
    post(client, "a", "c", "d", "e")
    flush(client)
    assert page(client) == (["a", "b", "c", "d", "e"], None)
    assert page(client, after="b", limit=2) == (["c", "d"], "d")


def test_a_file_the_series_query_quarantines_leaves_the_list(client: TestClient) -> None:
    post(client, "kept")
    flush(client)
    post(client, "lost")
    flush(client)
    assert page(client) == (["kept", "lost"], None)
    store = context(client).store
    path = store.fragment_dir / store.manifest.read().fragments[-1].name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    day = {"start": "2024-01-15T00:00:00Z", "end": "2024-01-16T00:00:00Z"}
    assert client.get(HR, params={"user_id": "lost", **day}).status_code == 404
    assert page(client) == (["kept"], None)
