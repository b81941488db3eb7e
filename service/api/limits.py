"""The body deadline: a request body not received in time is answered ``408``."""

from __future__ import annotations

import asyncio

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
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        whole = False

        async def receive_in_time() -> Message:
            nonlocal whole
            if whole:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"body not received within {self.timeout_s:g}s",
                    [{"field": "body", "reason": f"not received within {self.timeout_s:g}s"}],
                ) from exc
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_in_time, send)
