"""Connection limits under gunicorn: header block size and time, idle connections.

uvicorn's httptools protocol bounds none of them: it reads a header block of any size
(httptools joins the pieces of a long header by repeated concatenation: 100 MB of headers
held a worker for seconds), starts no timer on a new connection, and stops the keep-alive
timer at the first byte, so a client that sends part of a header block holds its
connection for ever. ``BoundedHttpProtocol`` adds those bounds at ~5k instructions a request
when the header block arrives in one read (the usual case): its counter and timer start
only when a read ends inside a header block.

- a new connection that sends nothing is closed after gunicorn's ``keepalive``, like an
  idle connection after a response (uvicorn's own timer);
- a header block over ``MAX_HEAD_BYTES`` is answered 431, one not complete within
  ``HR_HEADER_TIMEOUT_S`` of its first read is answered 408; both close the connection,
  after reading and dropping what the client still sends for up to ``LINGER_S`` (closing
  with unread bytes would reset the connection, and the client could lose the answer;
  a client that is still sending after that gets the reset). While an earlier request
  on the connection is still being answered (pipelining) the connection is closed
  without an answer: one written then would be taken for the earlier request's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from service.config import Settings
from service.errors import (
    HeadersTooLarge,
    RequestTimeout,
    ServiceError,
    error_response,
    raw_response,
)

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

# nginx's and Node's default; the largest header block a client of ours sends is ~1 KB
MAX_HEAD_BYTES = 16 * 1024
LINGER_S = 2.0
# a response that would never end by itself (an event stream) puts a callable under this
# key of its scope's state: a graceful shutdown calls it, so the response ends and the
# worker does not wait out its graceful timeout for it
CLOSE_ON_SHUTDOWN = "close_on_shutdown"

log = logging.getLogger("service.connections")


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded header block and an idle timer from the start."""

    head_timeout_s: ClassVar[float] = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast("asyncio.Transport", OneSendPerTurn(transport, self.loop))
        self._in_head = False
        self._head_bytes = 0  # of the reads that ended inside the current header block
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._read_size = 0
        # uvicorn arms it only once a response is sent; any byte received cancels it
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            close = cycle.scope.get("state", {}).get(CLOSE_ON_SHUTDOWN)
            if close is not None:
                close()
        HttpToolsProtocol.shutdown(self)

    # the hot callbacks call the base class by name: with super() the overrides cost 8.8k
    # instructions a request over uvicorn's protocol, by name 5.4k (callgrind)

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._stop_head_timer()
        # a block that came whole in one read was never counted: size it only when that
        # read could hold an oversized one (a loop over the headers costs ~1 us)
        if self._head_bytes + self._read_size > MAX_HEAD_BYTES and _size(self) > MAX_HEAD_BYTES:
            served, self.app = self.app, _as_app(self._refusal(_headers_too_large()))
            try:
                HttpToolsProtocol.on_headers_complete(self)
            finally:
                self.app = served
            return
        HttpToolsProtocol.on_headers_complete(self)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: dropped unparsed
        self._read_size = len(data)
        HttpToolsProtocol.data_received(self, data)
        if self._in_head:
            self._head_continues(len(data))

    def _head_continues(self, size: int) -> None:
        """A read ended inside a header block: count it (all of it, so a pipelined head that
        shares a read with the end of the previous body counts that too) and time the block."""
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(_headers_too_large())
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        reason = f"not received within {self.head_timeout_s:g}s"
        self._refuse(
            RequestTimeout(f"header block {reason}", [{"field": "headers", "reason": reason}])
        )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refusal(self, exc: ServiceError) -> ServiceError:
        log.info("request from %s refused: %s", self.client, exc)
        return exc

    def _refuse(self, exc: ServiceError) -> None:
        """Answer ``exc`` with no request in progress, and close once the client is done."""
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        self._refusal(exc)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        self._refused = True
        self.transport.write(raw_response(exc))
        self.transport.write_eof()
        # the client closing its side closes the transport (``eof_received``) sooner
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            LINGER_S, self.timeout_keep_alive_handler
        )


class OneSendPerTurn:
    """A transport whose writes of one turn of the event loop leave in one system call.

    uvicorn writes a response's head and its body separately, each at once: two sends,
    two packets, two wake-ups of the client. Here a write is held until the end of the
    turn (``call_soon``), so the head and body of a response go out together; whatever
    ends the stream (``close``, ``write_eof``) sends what is held first. Over
    ``HOLD_BYTES`` held, everything goes at once: a large body is not copied to be
    joined, and the transport's flow control sees it as before."""

    __slots__ = ("_held", "_held_bytes", "_loop", "_transport")

    HOLD_BYTES = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.send_held)
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > self.HOLD_BYTES:
            self.send_held()

    def send_held(self) -> None:
        held, size = self._held, self._held_bytes
        if not held:
            return
        self._held, self._held_bytes = [], 0
        if self._transport.is_closing():
            return  # as a write to a closing transport: dropped
        if len(held) == 1:
            self._transport.write(held[0])
        elif size <= self.HOLD_BYTES:
            self._transport.write(b"".join(held))
        else:
            self._transport.writelines(held)  # one vectored write, no copy

    def write_eof(self) -> None:
        self.send_held()
        self._transport.write_eof()

    def close(self) -> None:
        self.send_held()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _headers_too_large() -> HeadersTooLarge:
    reason = f"at most {MAX_HEAD_BYTES} bytes"
    return HeadersTooLarge(
        f"header block over {MAX_HEAD_BYTES} bytes", [{"field": "headers", "reason": reason}]
    )


def _size(protocol: HttpToolsProtocol) -> int:
    """The size of a complete header block, but for the method and version."""
    return len(protocol.url) + sum(len(name) + len(value) + 4 for name, value in protocol.headers)


def _as_app(exc: ServiceError) -> ASGI3Application:
    """An app that answers every request with ``exc``'s response."""
    return cast("ASGI3Application", error_response(exc))


def protocol_class(settings: Settings) -> type[BoundedHttpProtocol]:
    """``BoundedHttpProtocol`` with the limits of ``settings``."""

    class Configured(BoundedHttpProtocol):
        head_timeout_s = settings.header_timeout_s

    return Configured


class Worker(UvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker (``keepalive`` is its idle timeout) with bounded headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.http = protocol_class(Settings.from_env())
