"""What each request needs, whether a key has it, and the start-up check of the bind."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.auth import keys
from service.auth import rules as need
from service.auth.bind import listen_scope, refusal
from service.auth.principal import Principal
from service.auth.rules import Rules
from service.auth.rules import refusal as rule_refusal
from service.config import Settings
from service.errors import Forbidden

RULES = Rules(["/metrics/heart-rate", "/metrics/steps"])


@pytest.mark.parametrize(
    ("method", "path", "wanted"),
    [
        ("POST", "/metrics/heart-rate", need.INGEST),
        ("POST", "/metrics/steps/batch", need.INGEST),
        ("POST", "/readings", need.INGEST),
        ("GET", "/metrics/steps", need.READ_PARAM),
        ("HEAD", "/metrics/steps", need.READ_PARAM),
        ("GET", "/metrics/heart-rate/stream", need.READ_PARAM),
        ("GET", "/summary", need.READ_PARAM),
        ("GET", "/users/u1/export", need.READ_PATH),
        ("GET", "/users", need.READ_ALL),
        ("DELETE", "/users/u1", need.ADMIN),
        ("GET", "/health", need.NOTHING),
        ("GET", "/ready", need.NOTHING),
        ("GET", "/metrics", need.NOTHING),
        ("GET", "/openapi.json", need.NOTHING),
        ("GET", "/static/app.js", need.NOTHING),
        ("POST", "/health", need.KEY),
        ("GET", "/metrics/heart-rate/", need.KEY),
        ("GET", "/users/u1", need.KEY),
        ("GET", "/users//export", need.KEY),
        ("DELETE", "/users/u1/export", need.KEY),
        ("GET", "/nowhere", need.KEY),
        ("PUT", "/metrics/steps", need.KEY),
    ],
)
def test_each_route_needs_its_scope(method: str, path: str, wanted: need.Need) -> None:
    assert RULES.need(method, path) is wanted


INGEST = Principal("gw", frozenset({"ingest"}))
READ_ALL = Principal("all", frozenset({"read"}))
READ_AB = Principal("ab", frozenset({"read"}), frozenset({"a", "b"}))
ADMIN = Principal("root", frozenset({"admin"}))


def scope(path: str, query: str = "") -> dict:
    return {"path": path, "query_string": query.encode("latin-1")}


@pytest.mark.parametrize(
    ("need", "who", "request_scope", "allowed"),
    [
        (need.INGEST, INGEST, scope("/readings"), True),
        (need.INGEST, READ_ALL, scope("/readings"), False),
        (need.INGEST, ADMIN, scope("/readings"), True),
        (need.READ_PARAM, INGEST, scope("/summary", "user_id=a"), False),
        (need.READ_PARAM, READ_ALL, scope("/summary", "user_id=z"), True),
        (need.READ_PARAM, READ_AB, scope("/summary", "user_id=a"), True),
        (need.READ_PARAM, READ_AB, scope("/summary", "user_id=c"), False),
        (need.READ_PARAM, READ_AB, scope("/summary", "user_id=%61"), True),  # "a" encoded
        (need.READ_PARAM, READ_AB, scope("/summary", "user_id=a&user_id=c"), False),
        (need.READ_PARAM, READ_AB, scope("/summary", "user_id=c&user_id=a"), False),
        (need.READ_PARAM, READ_AB, scope("/summary", ""), False),
        (need.READ_PARAM, READ_AB, scope("/summary", "user_idx=a"), False),
        (need.READ_PATH, READ_AB, scope("/users/b/export"), True),
        (need.READ_PATH, READ_AB, scope("/users/c/export"), False),
        (need.READ_ALL, READ_AB, scope("/users"), False),
        (need.READ_ALL, READ_ALL, scope("/users"), True),
        (need.READ_ALL, ADMIN, scope("/users"), True),
        (need.ADMIN, READ_ALL, scope("/users/a"), False),
        (need.ADMIN, ADMIN, scope("/users/a"), True),
        (need.KEY, READ_AB, scope("/nowhere"), True),
    ],
)
def test_a_key_has_the_scope_or_is_forbidden(need, who, request_scope, allowed) -> None:
    problem = rule_refusal(need, who, request_scope)
    assert (problem is None) is allowed
    if problem is not None:
        assert isinstance(problem, Forbidden)
        assert who.name in str(problem)


@pytest.mark.parametrize(
    ("addresses", "scope_"),
    [
        ([("127.0.0.1", 8000)], "loopback"),
        ([("127.9.9.9", 8000), ("::1", 8000)], "loopback"),
        ([("localhost", 8000)], "loopback"),
        (["/run/hr.sock"], "loopback"),
        ([("0.0.0.0", 8000)], "network"),
        ([("127.0.0.1", 8000), ("10.0.0.5", 8000)], "network"),
        ([("::", 8000)], "network"),
        ([("example.org", 80)], "network"),
    ],
)
def test_the_listen_scope_of_binds(addresses, scope_) -> None:
    assert listen_scope(addresses) == scope_


def test_a_server_beyond_loopback_needs_a_key_unless_auth_is_off(tmp_path: Path) -> None:
    public, local = [("0.0.0.0", 8000)], [("127.0.0.1", 8000)]
    settings = Settings(data_dir=tmp_path)
    problem = refusal(settings, public)
    assert problem is not None
    assert "keys create" in problem
    assert "0.0.0.0:8000" in problem
    assert refusal(Settings(data_dir=tmp_path, auth="on"), public) is not None
    assert refusal(settings, local) is None
    assert refusal(Settings(data_dir=tmp_path, auth="off"), public) is None
    keys.create(tmp_path, "gw", ["ingest"], [], 5)
    assert refusal(settings, public) is None


def test_auth_settings_from_the_environment() -> None:
    settings = Settings.from_env({"HR_AUTH": "on", "HR_CORS_ORIGINS": "https://a.example, *"})
    assert settings.auth_required
    assert settings.cors_origins == ("https://a.example", "*")
    assert not Settings.from_env({}).auth_required
    assert Settings.from_env({"HR_LISTEN": "network"}).auth_required
    assert not Settings.from_env({"HR_LISTEN": "network", "HR_AUTH": "off"}).auth_required
