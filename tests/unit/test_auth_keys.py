"""The keys file and a worker's view of it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from service.auth import keys
from service.auth.keys import KeysError
from service.auth.ring import CHECK_INTERVAL_S, KeyRing


def test_a_created_key_is_stored_only_as_its_hash(tmp_path: Path) -> None:
    secret = keys.create(tmp_path / "d", "gw", ["ingest"], [], 5)
    text = keys.keys_path(tmp_path / "d").read_text()
    assert secret.startswith("hr_")
    assert len(secret) > 40
    assert secret not in text
    assert json.loads(text)["keys"][0]["sha256"] == keys.digest(secret).hex()


def test_the_data_dir_and_keys_file_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keys.create(tmp_path / "d", "gw", ["ingest"], [], 5)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    assert stat.S_IMODE(keys.keys_path(tmp_path / "d").stat().st_mode) == 0o600


def test_keys_round_trip_with_scopes_and_users(tmp_path: Path) -> None:
    keys.create(tmp_path, "doc", ["read"], ["u1", "u2"], 5)
    keys.create(tmp_path, "ops", ["admin", "ingest"], [], 5)
    found = {k.principal.name: k.principal for k in keys.load(keys.keys_path(tmp_path))}
    assert found["doc"].users == {"u1", "u2"}
    assert found["doc"].scopes == {"read"}
    assert found["ops"].users is None
    assert found["ops"].scopes == {"admin", "ingest"}


def test_revoke_removes_the_key_and_names_an_unknown_one(tmp_path: Path) -> None:
    keys.create(tmp_path, "a", ["read"], [], 5)
    keys.create(tmp_path, "b", ["read"], [], 5)
    keys.revoke(tmp_path, "a", 5)
    assert [k.principal.name for k in keys.load(keys.keys_path(tmp_path))] == ["b"]
    with pytest.raises(KeysError, match="no key named 'a'"):
        keys.revoke(tmp_path, "a", 5)


@pytest.mark.parametrize(
    ("name", "scopes", "users", "message"),
    [
        ("bad name", ["read"], [], "key name"),
        ("-x", ["read"], [], "key name"),
        ("x", ["root"], [], "scopes"),
        ("x", [], [], "scopes"),
        ("x", ["ingest"], ["u1"], "--user limits the read scope"),
        ("x", ["read"], ["u\n1"], "user id"),
    ],
)
def test_a_bad_key_is_refused(tmp_path, name, scopes, users, message) -> None:
    with pytest.raises(KeysError, match=message):
        keys.create(tmp_path, name, scopes, users, 5)
    assert not keys.keys_path(tmp_path).exists()


def test_a_name_is_taken_once(tmp_path: Path) -> None:
    keys.create(tmp_path, "gw", ["ingest"], [], 5)
    with pytest.raises(KeysError, match="exists"):
        keys.create(tmp_path, "gw", ["read"], [], 5)


def test_a_change_waits_for_the_lock_then_gives_up(tmp_path: Path) -> None:
    keys.create(tmp_path, "gw", ["ingest"], [], 5)
    lock = keys.private_lock(tmp_path / "keys.json.lock")
    with lock.acquire(timeout=1), pytest.raises(KeysError, match="not acquired"):
        keys.revoke(tmp_path, "gw", 0.05)
    keys.revoke(tmp_path, "gw", 5)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_ring_sees_a_revocation_after_its_check_interval(tmp_path: Path) -> None:
    secret = keys.create(tmp_path, "gw", ["ingest"], [], 5).encode()
    clock = Clock()
    ring = KeyRing(keys.keys_path(tmp_path), clock)
    principal = ring.find(secret)
    assert principal is not None
    assert principal.name == "gw"
    keys.revoke(tmp_path, "gw", 5)
    clock.now += CHECK_INTERVAL_S * 0.9
    assert ring.find(secret) is not None  # cached: no stat per request
    clock.now += CHECK_INTERVAL_S * 0.2
    assert ring.find(secret) is None


def test_the_ring_sees_a_new_key_and_refuses_wrong_secrets(tmp_path: Path) -> None:
    clock = Clock()
    ring = KeyRing(keys.keys_path(tmp_path), clock)
    assert ring.current() == ()
    secret = keys.create(tmp_path, "gw", ["ingest"], [], 5).encode()
    clock.now += CHECK_INTERVAL_S
    assert ring.find(secret) is not None
    assert ring.find(secret[:-1]) is None
    assert ring.find(b"") is None


def test_an_unreadable_keys_file_refuses_every_key(tmp_path: Path, caplog) -> None:
    secret = keys.create(tmp_path, "gw", ["ingest"], [], 5).encode()
    clock = Clock()
    ring = KeyRing(keys.keys_path(tmp_path), clock)
    assert ring.find(secret) is not None
    keys.keys_path(tmp_path).write_text("{not json")
    clock.now += CHECK_INTERVAL_S
    assert ring.find(secret) is None
    assert "keys file unreadable" in caplog.text
