"""Access control in-process: every endpoint x no key / wrong key / each scope / revoked key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.auth import keys
from service.config import Settings

DAY = "start=2024-01-15T00:00:00Z&end=2024-01-16T00:00:00Z"
BASE = {"device_id": "device_a", "timestamp": "2024-01-15T10:00:00Z"}
READING = {"user_id": "u1", **BASE, "heart_rate": 72}

# (method, path, body, scope it needs: "ingest", "admin", "all" = read for every user,
# or a user id = read for that user)
ENDPOINTS = [
    ("POST", "/metrics/heart-rate", READING, "ingest"),
    ("POST", "/metrics/steps/batch", [{"user_id": "u1", **BASE, "steps": 5}], "ingest"),
    ("POST", "/readings", {"readings": [{"user_id": "u2", **BASE, "calories": 1.5}]}, "ingest"),
    ("GET", f"/metrics/heart-rate?user_id=u1&{DAY}", None, "u1"),
    ("GET", f"/metrics/calories?user_id=u2&{DAY}", None, "u2"),
    # an unknown parameter makes the stream answer 400 once access is granted, not stream
    ("GET", "/metrics/steps/stream?user_id=u1&no_such_parameter=1", None, "u1"),
    ("GET", f"/summary?user_id=u1&{DAY}", None, "u1"),
    ("GET", f"/summary?user_id=u2&{DAY}", None, "u2"),
    ("GET", "/users/u1/export?format=ndjson", None, "u1"),
    ("GET", "/users/u2/export?format=ndjson", None, "u2"),
    ("GET", "/users", None, "all"),
    ("DELETE", "/users/u3", None, "admin"),
]

# what each key may do, by the needs above
KEYS = {
    "gw": (["ingest"], [], {"ingest"}),
    "reader": (["read"], [], {"u1", "u2", "all"}),
    "u1-only": (["read"], ["u1"], {"u1"}),
    "root": (["admin"], [], {"ingest", "u1", "u2", "all", "admin"}),
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    data = tmp_path_factory.mktemp("auth") / "data"
    secrets = {name: keys.create(data, name, s, u, 5) for name, (s, u, _) in KEYS.items()}
    secrets["revoked"] = keys.create(data, "revoked", ["admin"], [], 5)
    keys.revoke(data, "revoked", 5)
    settings = Settings(data_dir=data, auth="on", flush_interval_s=3600)
    with TestClient(create_app(settings)) as client:
        yield client, secrets


def call(client: TestClient, method: str, path: str, body: object, secret: str | None):
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "need"), ENDPOINTS)
@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_scope_reaches_only_its_endpoints(secured, key, method, path, body, need) -> None:
    client, secrets = secured
    r = call(client, method, path, body, secrets[key])
    if need in KEYS[key][2]:
        assert r.status_code not in (401, 403), r.text
    else:
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden"
        assert r.json()["detail"][0]["field"] == "authorization"


@pytest.mark.parametrize(("method", "path", "body", "need"), ENDPOINTS)
@pytest.mark.parametrize("credential", ["none", "wrong", "revoked", "not bearer"])
def test_no_valid_key_is_401_with_a_challenge(secured, credential, method, path, body, need):
    client, secrets = secured
    secret = {"none": None, "wrong": "hr_" + "x" * 43, "revoked": secrets["revoked"]}.get(
        credential
    )
    if credential == "not bearer":
        r = client.request(
            method, path, json=body, headers={"Authorization": f"Basic {secrets['root']}"}
        )
    else:
        r = call(client, method, path, body, secret)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthorized"


def test_an_accepted_reading_is_read_back_with_a_read_key(secured) -> None:
    client, secrets = secured
    reading = {**READING, "user_id": "u1", "timestamp": "2024-01-15T11:00:00Z"}
    assert call(client, "POST", "/metrics/heart-rate", reading, secrets["gw"]).status_code == 202
    r = call(client, "GET", f"/metrics/heart-rate?user_id=u1&{DAY}", None, secrets["u1-only"])
    assert r.status_code == 200
    assert r.json()["data"]


def test_the_scheme_is_case_insensitive(secured) -> None:
    client, secrets = secured
    r = client.get("/users", headers={"Authorization": f"bearer {secrets['root']}"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_operations_endpoints_stay_open(secured, path: str) -> None:
    client, _ = secured
    assert client.get(path).status_code == 200


def test_unknown_paths_do_not_show_without_a_key(secured) -> None:
    client, secrets = secured
    assert client.get("/no/such/route").status_code == 401
    assert client.get("/metrics/heart-rate/").status_code == 401  # not even its redirect
    assert call(client, "GET", "/no/such/route", None, secrets["gw"]).status_code == 404


def test_the_access_log_names_the_key_not_the_secret(tmp_path: Path, capfd) -> None:
    secret = keys.create(tmp_path / "data", "gw", ["ingest"], [], 5)
    settings = Settings(data_dir=tmp_path / "data", auth="on", log_format="json")
    with TestClient(create_app(settings)) as client:
        capfd.readouterr()
        assert call(client, "POST", "/metrics/heart-rate", READING, secret).status_code == 202
        assert call(client, "POST", "/readings", {}, secret + "x").status_code == 401
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "service.access" in line]
    assert len(lines) == 2
    assert '"key":"gw"' in lines[0]
    assert '"status":202' in lines[0]
    assert '"key"' not in lines[1]
    assert '"status":401' in lines[1]
    assert secret not in err


def test_auto_on_loopback_is_open_while_no_key_exists(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        assert client.post("/metrics/heart-rate", json=READING).status_code == 202
        assert client.get("/users").status_code == 200


def test_auto_on_loopback_needs_a_key_once_one_exists(tmp_path: Path) -> None:
    keys.create(tmp_path / "data", "gw", ["ingest"], [], 5)
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        assert client.post("/metrics/heart-rate", json=READING).status_code == 401


def test_auto_beyond_loopback_needs_a_key_even_with_none(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", listen="network")
    with TestClient(create_app(settings)) as client:
        assert client.post("/metrics/heart-rate", json=READING).status_code == 401
        assert client.get("/health").status_code == 200


def test_off_ignores_keys(tmp_path: Path) -> None:
    keys.create(tmp_path / "data", "gw", ["ingest"], [], 5)
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", auth="off"))) as client:
        assert client.get("/users").status_code == 200
        assert client.post("/metrics/heart-rate", json=READING).status_code == 202


def test_cors_preflight_is_answered_without_a_key(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", auth="on", cors_origins=("https://dash.example",)
    )
    origin = {"Origin": "https://dash.example"}
    with TestClient(create_app(settings)) as client:
        r = client.options(
            "/metrics/heart-rate",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://dash.example"
        assert "Authorization" in r.headers["access-control-allow-headers"]
        refused = client.get("/users", headers=origin)
        assert refused.status_code == 401  # the page can read the refusal
        assert refused.headers["access-control-allow-origin"] == "https://dash.example"
        other = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(client: TestClient) -> None:
    r = client.get("/health", headers={"Origin": "https://dash.example"})
    assert "access-control-allow-origin" not in r.headers
