"""The live stream of each metric: Server-Sent Events of changed buckets.

``GET /metrics/<metric>/stream?user_id=[&device_id=][&interval=]``: the last hour's
buckets, then one ``bucket`` event per changed bucket (see ``live.hub``), a comment line
when idle for ``HR_STREAM_KEEPALIVE_S``; ``Last-Event-ID`` resumes. The stream ends when
the client goes, or when the server stops (the connection layer closes it then, see
``connections.CLOSE_ON_SHUTDOWN``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.types import Receive, Scope, Send

from service import metrics
from service.api import params
from service.api.context import worker_context
from service.api.schemas import QUERY_ERRORS
from service.connections import CLOSE_ON_SHUTDOWN
from service.errors import Unavailable, field_error
from service.live.hub import Event, Hub, Stream
from service.live.updates import Topic
from service.query.buckets import INTERVALS
from service.schema import MetricSpec

STREAM_PARAMS = ("user_id", "device_id", "interval")
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies such as nginx would hold events back
]
KEEP_ALIVE = b": keep-alive\n\n"


def encode(events: list[Event]) -> bytes:
    """SSE lines for ``events``; the bucket JSON holds no newline."""
    return "".join(f"id: {i}\nevent: bucket\ndata: {data}\n\n" for i, data, _ in events).encode()


class EventStream(Response):
    """The streaming answer: opens a stream on ``hub`` when called, closes it at the end."""

    def __init__(self, hub: Hub, topic: Topic, since_ns: int | None, keepalive_s: float) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = list(_HEADERS)
        self._hub, self._topic, self._since, self._keepalive = hub, topic, since_ns, keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = await self._hub.open(self._topic, self._since)
        scope.setdefault("state", {})[CLOSE_ON_SHUTDOWN] = stream.close
        writer = asyncio.create_task(self._write(stream, send))
        listener = asyncio.create_task(_disconnect(receive))
        try:
            await asyncio.wait([writer, listener], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._hub.close(stream)
            for task in (writer, listener):
                task.cancel()
            await asyncio.wait([writer, listener])
        error = None if writer.cancelled() else writer.exception()
        if error is not None and not isinstance(error, OSError):  # OSError: the client went
            raise error

    async def _write(self, stream: Stream, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        while (events := await stream.next(self._keepalive)) is not None:
            if events:
                now = time.time_ns()
                for _, _, oldest in events:
                    if oldest:
                        metrics.tally.observe(metrics.STREAM_LAG_SECONDS, (now - oldest) / 1e9)
                metrics.tally.inc(metrics.STREAM_EVENTS, len(events))
            body = encode(events) if events else KEEP_ALIVE
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def last_event_id(text: str | None) -> int | None:
    """The stamp of a ``Last-Event-ID`` this server wrote; None for anything else."""
    if text is None or not text.strip().isdigit() or len(text.strip()) > 20:
        return None
    return int(text.strip())


# longer than 40 lines: one route function closed over its metric, and its documentation
def stream_router(spec: MetricSpec) -> APIRouter:
    router = APIRouter(tags=["live"])

    @router.get(
        spec.path + "/stream",
        summary=f"{spec.name} buckets as they change (Server-Sent Events)",
        response_class=Response,
        responses={
            400: QUERY_ERRORS[400],  # no readings yet is an open stream, not a 404
            200: {
                "description": "The last hour's buckets, then each bucket as it changes.",
                "content": {
                    "text/event-stream": {
                        "schema": {"type": "string"},
                        "example": (
                            f"id: 1705312805000000000\nevent: bucket\ndata: "
                            f'{{"timestamp":"2024-01-15T10:00:00Z","{spec.field}":75.0,'
                            '"device_id":"device_a","min":72.0,"max":79.0,"count":12}\n\n'
                        ),
                    }
                },
            },
        },
    )
    async def stream(
        request: Request,
        user_id: Annotated[str, Query(description="The user whose buckets to follow.")],
        device_id: Annotated[str | None, Query(description="Only this device.")] = None,
        interval: Annotated[
            str, Query(description="Bucket width (UTC-aligned): " + ", ".join(INTERVALS))
        ] = "1m",
        last_event: Annotated[
            str | None, Header(alias="last-event-id", description="Resume after this event.")
        ] = None,
    ) -> Response:
        params.only(request, STREAM_PARAMS)
        params.user(user_id, device_id)
        if interval not in INTERVALS:
            raise field_error("interval", "must be one of " + ", ".join(INTERVALS))
        ctx = worker_context(request.app.state)
        hub = getattr(request.app.state, "streams", None)
        if not isinstance(hub, Hub):
            raise Unavailable("the worker is starting or stopping")
        keepalive = ctx.settings.stream_keepalive_s
        topic = Topic(spec.name, user_id, device_id, interval)
        return EventStream(hub, topic, last_event_id(last_event), keepalive)

    return router
