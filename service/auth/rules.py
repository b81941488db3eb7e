"""What each request needs: a route table from (method, path) to a ``Need``, and ``refusal``,
which says whether a principal has it. Pure: no I/O, no web framework.

| request | needs |
|---|---|
| ``POST /metrics/<stem>``, ``.../batch``, ``POST /readings`` | ``ingest`` |
| ``GET /metrics/<stem>``, ``.../stream``, ``/summary`` | ``read`` for the ``user_id`` parameter |
| ``GET /users/<id>/export`` | ``read`` for ``<id>`` |
| ``GET /users`` | ``read`` for every user, or ``admin`` |
| ``DELETE /users/<id>`` | ``admin`` |
| ``GET /health``, ``/ready``, ``/metrics``, docs, dashboard, ``/static/...`` | nothing |
| anything else | some valid key, then the routes answer (404, 405 ...) |

``admin`` has every scope. Unknown paths need a key so that a caller without one learns
nothing about which routes exist: everything but the open pages answers it ``401``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.types import Scope

from service.auth.principal import Principal
from service.errors import Forbidden, ServiceError

# GET (and HEAD) pages that hold no data
OPEN_PATHS = ("/health", "/ready", "/metrics", "/", "/dashboard", "/docs", "/redoc")
OPEN_PATHS_MORE = ("/openapi.json", "/docs/oauth2-redirect")
OPEN_PREFIXES = ("/static/",)


class Need(enum.Enum):
    NOTHING = "nothing"
    KEY = "any key"
    INGEST = "ingest"
    READ_PARAM = "read for the user_id parameter"
    READ_PATH = "read for the user in the path"
    READ_ALL = "read for every user"
    ADMIN = "admin"


class Rules:
    def __init__(self, metric_paths: Iterable[str]) -> None:
        exact = {("GET", path): Need.NOTHING for path in (*OPEN_PATHS, *OPEN_PATHS_MORE)}
        for path in metric_paths:
            exact["POST", path] = exact["POST", path + "/batch"] = Need.INGEST
            exact["GET", path] = exact["GET", path + "/stream"] = Need.READ_PARAM
        exact["POST", "/readings"] = Need.INGEST
        exact["GET", "/summary"] = Need.READ_PARAM
        exact["GET", "/users"] = Need.READ_ALL
        self._exact = exact

    def need(self, method: str, path: str) -> Need:
        method = "GET" if method == "HEAD" else method
        found = self._exact.get((method, path))
        if found is not None:
            return found
        if method == "GET" and path.startswith(OPEN_PREFIXES):
            return Need.NOTHING
        parts = path.split("/")  # "/users/<id>/export" -> ["", "users", "<id>", "export"]
        if len(parts) >= 3 and parts[1] == "users" and parts[2]:
            if len(parts) == 3 and method == "DELETE":
                return Need.ADMIN
            if len(parts) == 4 and parts[3] == "export" and method == "GET":
                return Need.READ_PATH
        return Need.KEY


def refusal(need: Need, who: Principal, scope: Scope) -> ServiceError | None:
    """Why ``who`` may not make this request (a ``Forbidden``), or None when it may."""
    if who.admin or need is Need.KEY or need is Need.NOTHING:
        return None
    if need is Need.INGEST:
        allowed = who.may_ingest()
    elif need is Need.READ_ALL:
        allowed = who.may_read_all()
    elif need is Need.READ_PATH:
        allowed = who.may_read(scope["path"].split("/")[2])
    elif need is Need.READ_PARAM:
        allowed = _may_read_param(who, scope)
    else:
        allowed = False  # ADMIN
    if allowed:
        return None
    reason = f"the key {who.name!r} lacks the scope this request needs: {need.value}"
    return Forbidden(reason, [{"field": "authorization", "reason": reason}])


def _may_read_param(who: Principal, scope: Scope) -> bool:
    if who.may_read_all():
        return True  # a missing user_id is the route's 400 to report
    query = scope.get("query_string", b"").decode("latin-1")
    # parsed as Starlette parses it for the route; every value counts (a repeated one is
    # the route's 400, but it must not get there with a user this key may not read)
    users = [value for name, value in parse_qsl(query, keep_blank_values=True) if name == "user_id"]
    return bool(users) and all(who.may_read(user) for user in users)
