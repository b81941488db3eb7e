"""The body deadline: a request body not received in time is answered ``408``."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Generator
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import RequestTimeout


class BodyDeadline:
    """Every read of a request body must end by ``timeout_s`` after the request started.

    The deadline covers the whole body, not each read, so a body trickled a byte at a time
    cannot hold a request open. A read past it raises ``RequestTimeout``, which the route
    reading the body reports (408, and the connection closes). Once the body is whole,
    reads pass through unbounded: Starlette waits on them for a client's disconnect.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()  # the loop's clock costs ~8x this; it is read only to wait
        whole = False

        async def receive_in_time() -> Message:
            nonlocal whole
            if whole:
                return await receive()
            read: Generator[Any, Any, Message] = receive().__await__()
            # a timer only for a read that waits: on the hot path the body came with the
            # header block, and a timer per request (asyncio.timeout_at) cost ~8 us
            try:
                waiting_on = read.send(None)
            except StopIteration as done:
                message: Message = done.value
            else:
                message = await self._rest(read, waiting_on, started)
            whole = not message.get("more_body", False)  # a disconnect has none: whole too
            return message

        await self.app(scope, receive_in_time, send)

    async def _rest(
        self, read: Generator[Any, Any, Message], waiting_on: object, started: float
    ) -> Message:
        """The rest of a read that waits, up to the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s - (time.monotonic() - started)
        try:
            async with asyncio.timeout_at(deadline):
                return await _resume(read, waiting_on)
        except TimeoutError as exc:
            reason = f"not received within {self.timeout_s:g}s"
            raise RequestTimeout(f"body {reason}", [{"field": "body", "reason": reason}]) from exc


@types.coroutine
def _resume(read: Generator[Any, Any, Message], waiting_on: object) -> Generator[Any, Any, Message]:
    """Await ``read`` (an ``__await__`` iterator) on from where it stopped, waiting on
    ``waiting_on`` (what ``await`` does from the start)."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            read.close()
            raise
        except BaseException as exc:  # a cancellation (the deadline's): ``read`` gets it
            try:
                waiting_on = read.throw(exc)
            except StopIteration as done:
                return cast("Message", done.value)
        else:
            try:
                waiting_on = read.send(sent)
            except StopIteration as done:
                return cast("Message", done.value)
