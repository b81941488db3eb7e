"""The trailing-slash redirect is relative: it never echoes the request's Host."""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.testclient import TestClient
from starlette.types import Message

from service.api.redirects import SlashRedirect

PATH = "/metrics/heart-rate"


def test_a_slash_redirect_does_not_echo_the_host(client: TestClient) -> None:
    r = client.get(
        PATH + "/?user_id=u&x=%0d%0a",
        headers={"Host": "evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 307
    assert r.headers["location"] == PATH + "?user_id=u&x=%0d%0a"


def test_a_redirect_keeps_working_and_unknown_paths_are_404(client: TestClient) -> None:
    r = client.get(PATH + "/", params={"user_id": "u"})  # followed: a relative Location
    assert r.history[0].status_code == 307
    assert r.status_code == 400  # the query route itself answered (start/end missing)
    assert client.get("/nowhere/", follow_redirects=False).status_code == 404


def status_of(router: Router, path: str) -> tuple[int, dict[bytes, bytes]]:
    """A raw ASGI GET of ``path`` (a client library would read "//host/..." as a URL)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    anyio.run(router, scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


def test_a_path_that_would_redirect_to_another_site_is_a_404() -> None:
    def page(request: Request) -> Response:
        return PlainTextResponse("x")

    router = Router([Route("/{rest:path}/", page)], redirect_slashes=False)
    router.default = SlashRedirect(router)
    status, headers = status_of(router, "/a/b")
    assert (status, headers[b"location"]) == (307, b"/a/b/")
    assert status_of(router, "//evil.example/b")[0] == 404  # "//evil.example/b/": off-site
