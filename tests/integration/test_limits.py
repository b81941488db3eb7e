"""Limits on what a client can hold, against real gunicorn: header blocks, timeouts, idle
connections, and 200 slow clients at once."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time

import pytest

from tests.integration.conftest import Server, request

pytestmark = pytest.mark.integration

ONE = "/metrics/heart-rate"
READING = {
    "user_id": "u1",
    "device_id": "device_a",
    "timestamp": "2024-01-15T10:00:00Z",
    "heart_rate": 75,
}
WAIT_S = 30  # the longest any socket read waits; every limit under test is far shorter


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)


def _read_to_close(sock: socket.socket, deadline: float | None = None) -> bytes:
    """Everything the server sends until it closes the connection (by ``deadline``)."""
    deadline = deadline or time.monotonic() + WAIT_S
    chunks = []
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks) + b" (still open)"
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _answer(raw: bytes) -> tuple[int, dict[str, str], object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def _head(path: str = ONE, **extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Big": "a" * 1024 * 1024},  # one header: httptools would join it piece by piece
        {f"X-Many-{i}": "b" * 100 for i in range(200)},
    ],
    ids=["one-large-header", "many-headers"],
)
def test_a_header_block_over_16_kib_is_a_431(server_factory, headers: dict[str, str]) -> None:
    server = server_factory()
    with _connect(server) as sock:
        sock.sendall(_head(**headers) + b"Content-Length: 2\r\n\r\n{}")
        status, response_headers, body = _answer(_read_to_close(sock))
    assert status == 431
    assert body == {
        "error": "headers_too_large",
        "detail": [{"field": "headers", "reason": "at most 16384 bytes"}],
    }
    assert response_headers["connection"] == "close"
    assert request(server, "GET", "/health")[0] == 200  # the worker is free


def test_a_header_block_under_16_kib_is_read(server_factory) -> None:
    server = server_factory()
    body = json.dumps(READING).encode()
    with _connect(server) as sock:
        # ~15 KB, split over several reads: counted across them, still under the limit
        sock.sendall(_head(**{"X-Pad": "c" * 15_000}))
        time.sleep(0.2)
        sock.sendall(b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert _read_to_close(sock).startswith(b"HTTP/1.1 202 ")


def test_a_header_block_not_completed_in_time_is_a_408(server_factory) -> None:
    server = server_factory(HR_HEADER_TIMEOUT_S="1")
    with _connect(server) as sock:
        sock.sendall(_head()[:30])
        status, headers, body = _answer(_read_to_close(sock))
    assert status == 408
    assert body == {
        "error": "request_timeout",
        "detail": [{"field": "headers", "reason": "not received within 1s"}],
    }
    assert headers["connection"] == "close"


def test_a_body_not_received_in_time_is_a_408(server_factory) -> None:
    server = server_factory(HR_BODY_TIMEOUT_S="1")
    with _connect(server) as sock:
        sock.sendall(_head() + b"Content-Length: 100\r\n\r\n" + b'{"user_id"')
        status, headers, body = _answer(_read_to_close(sock))
    assert status == 408
    assert body == {
        "error": "request_timeout",
        "detail": [{"field": "body", "reason": "not received within 1s"}],
    }
    assert headers["connection"] == "close"
    assert headers["x-request-id"]  # observed (latency, access log) like any request


def test_idle_connections_are_closed_after_keepalive(server_factory) -> None:
    # header and body limits far away: only gunicorn's keepalive (5 s) can close them in time
    server = server_factory(HR_HEADER_TIMEOUT_S="600", HR_BODY_TIMEOUT_S="600")
    used = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
    with _connect(server) as never_used, contextlib.closing(used):
        assert request(server, "GET", "/health", conn=used)[0] == 200
        assert request(server, "GET", "/health", conn=used)[0] == 200  # kept alive
        assert used.sock is not None
        # both closed by the server, before WAIT_S
        assert (_read_to_close(never_used), _read_to_close(used.sock)) == (b"", b"")


def test_200_slow_clients_do_not_stop_others_and_are_all_shed(server_factory) -> None:
    server = server_factory(HR_HEADER_TIMEOUT_S="2", HR_BODY_TIMEOUT_S="3")
    with contextlib.ExitStack() as stack:
        slow = [stack.enter_context(_connect(server)) for _ in range(200)]
        for i, sock in enumerate(slow):
            if i % 2:  # a header block that never ends
                sock.sendall(_head() + b"X-Slow: ")
            else:  # a body that never ends
                sock.sendall(_head() + b"Content-Length: 100000\r\n\r\n[")
        statuses = []
        for _ in range(10):  # trickle a byte into each, and serve others meanwhile
            for sock in slow:
                with contextlib.suppress(OSError):  # the server may have shed it already
                    sock.send(b"x")
            statuses.append(request(server, "POST", ONE, READING)[0])
            statuses.append(request(server, "GET", "/health")[0])
        assert statuses == [202, 200] * 10
        deadline = time.monotonic() + WAIT_S  # for all of them: they are shed together
        answers = [_read_to_close(sock, deadline) for sock in slow]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:12] for a in answers}
