"""``connections.OneSendPerTurn``: a response's head and body leave in one write."""

from __future__ import annotations

import asyncio
from typing import Any

from service.connections import OneSendPerTurn


class RecordingTransport:
    """What the event loop's transport was asked to do, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, parts: list[bytes]) -> None:
        self.calls.append(("writelines", list(parts)))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


async def _turns(count: int = 2) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def _held(transport: RecordingTransport) -> OneSendPerTurn:
    return OneSendPerTurn(transport, asyncio.get_running_loop())  # type: ignore[arg-type]


def test_the_writes_of_one_turn_leave_as_one() -> None:
    async def scenario() -> None:
        inner = RecordingTransport()
        outer = _held(inner)
        outer.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
        outer.write(b'{"status":"accepted"}')
        assert inner.calls == []
        assert outer.get_write_buffer_size() == 7 + 25 + 21
        await _turns()
        assert inner.calls == [("write", b'HTTP/1.1 202 Accepted\r\n\r\n{"status":"accepted"}')]
        outer.write(b"next")
        await _turns()
        assert inner.calls[1:] == [("write", b"next")]

    asyncio.run(scenario())


def test_past_the_hold_limit_everything_leaves_at_once_unjoined() -> None:
    async def scenario() -> None:
        inner = RecordingTransport()
        outer = _held(inner)
        head, body = b"head\r\n\r\n", b"x" * OneSendPerTurn.HOLD_BYTES
        outer.write(head)
        assert inner.calls == []
        outer.write(body)  # before the turn ends: the transport's flow control sees it
        assert inner.calls == [("writelines", [head, body])]
        assert outer.get_write_buffer_size() == 7
        await _turns()
        assert inner.calls == [("writelines", [head, body])]

    asyncio.run(scenario())


def test_closing_sends_what_is_held_first() -> None:
    async def scenario() -> None:
        inner = RecordingTransport()
        outer = _held(inner)
        outer.write(b"answer")
        outer.close()
        assert inner.calls == [("write", b"answer"), ("close", None)]
        await _turns()  # the turn's own send finds nothing left
        assert inner.calls == [("write", b"answer"), ("close", None)]

        inner = RecordingTransport()
        outer = _held(inner)
        outer.write(b"refusal")
        outer.write_eof()
        assert inner.calls == [("write", b"refusal"), ("write_eof", None)]

    asyncio.run(scenario())


def test_an_abort_or_a_closed_connection_drops_what_is_held() -> None:
    async def scenario() -> None:
        inner = RecordingTransport()
        outer = _held(inner)
        outer.write(b"never sent")
        outer.abort()
        await _turns()
        assert inner.calls == [("abort", None)]

        inner = RecordingTransport()
        outer = _held(inner)
        outer.write(b"too late")
        inner.closing = True  # the connection was lost meanwhile
        await _turns()
        assert inner.calls == []

    asyncio.run(scenario())


def test_everything_else_is_the_transports_own() -> None:
    async def scenario() -> None:
        outer = _held(RecordingTransport())
        assert outer.get_extra_info("peername") == "info peername"
        assert outer.is_closing() is False

    asyncio.run(scenario())
