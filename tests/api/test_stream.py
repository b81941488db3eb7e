"""The stream route in-process: its parameters, and what a disconnect leaves behind."""

from __future__ import annotations

import asyncio

import pytest

from service.api.stream import EventStream
from service.app import create_app
from service.config import Settings
from service.live.hub import Hub
from service.live.updates import Topic


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("user_id=u1&start=2024-01-01T00:00:00Z", "start"),
        ("user_id=u1&interval=2m", "interval"),
        ("user_id=", "user_id"),
        ("device_id=d", "user_id"),
    ],
)
def test_bad_parameters_are_named(client, query, field):
    r = client.get(f"/metrics/steps/stream?{query}")
    assert r.status_code == 400
    assert r.json()["detail"][0]["field"] == field


def test_disconnected_streams_leave_no_task_or_registry_entry(settings: Settings):
    async def cycle(hub: Hub, n: int) -> None:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            await asyncio.sleep(0)  # the client goes as soon as the stream is open
            return {"type": "http.disconnect"}

        topic = Topic("heart_rate", f"u{n % 7}", None, "1m")
        await EventStream(hub, topic, None, 15.0)({"type": "http"}, receive, send)
        assert sent[0]["status"] == 200

    async def main() -> None:
        app = create_app(settings)
        async with app.api.router.lifespan_context(app.api):
            hub = app.api.state.streams
            await cycle(hub, 0)
            tasks = len(asyncio.all_tasks())
            for n in range(1000):
                await cycle(hub, n)
            assert hub.open_streams == 0
            assert not hub._streams
            assert not hub._users
            assert not hub._feed.active
            assert len(asyncio.all_tasks()) == tasks

    asyncio.run(main())
