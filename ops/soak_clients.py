"""The soak's readers: a loop of series, summary and user-list queries over the data the
writers of ``ops/soak.lua`` are adding, and event streams held open on their users."""

from __future__ import annotations

import http.client
import json
import re
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

BASE = datetime(2024, 1, 1, tzinfo=UTC)  # soak.lua's BASE_S
# soak.lua's routes by the tag in their users' names, and the metrics each writes
ROUTES = (
    ("hr", ("heart-rate",)),
    ("steps", ("steps",)),
    ("calories", ("calories",)),
    ("readings", ("heart-rate", "steps", "calories")),
)
# (wrk prefix, users per route) of the two loads: soak.lua's single and batch modes
LOADS = (("soak-s", 1000), ("soak-b", 100))
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
_EVENT = b"event: bucket"
_ID = re.compile(rb"id: (\d+)\n")


def user_id(load: str, route: str, i: int) -> str:
    return f"{load}-t1-{route}-u{i}"  # soak.lua: PREFIX-t<thread>-<route>-u<i>, one thread


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Queries:
    """Back-to-back rounds on one keep-alive connection: find where the writers are for one
    user (an hourly series over a week), then ask what a dashboard would about that hour and
    day; every fourth round pages through ``/users``. Counts answers per kind: 200, 404
    (nothing written there yet) or anything else, an error."""

    port: int
    counts: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _conn: http.client.HTTPConnection | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        r = 0
        while not self._stop.is_set():
            self._round(r)
            r += 1

    def _round(self, r: int) -> None:
        load, users = LOADS[r % 2]
        route, metrics = ROUTES[(r // 2) % len(ROUTES)]
        metric = metrics[(r // 8) % len(metrics)]
        user = user_id(load, route, (r * 37) % users)
        path = f"/metrics/{metric}"
        week = {"user_id": user, "start": iso(BASE), "end": iso(BASE + 7 * DAY), "interval": "1h"}
        status, body = self._get("front", path, week, gzip=False)
        if status != 200:
            self._stop.wait(0.5)
            return
        hour = datetime.fromisoformat(json.loads(body)["data"][-1]["timestamp"])
        day = hour.replace(hour=0)
        berlin = {"tz": "Europe/Berlin"}
        for kind, target, start, end, extra in (
            ("series 1s", path, hour, hour + HOUR, {"interval": "1s"}),
            ("series 1m", path, hour - HOUR, hour + HOUR, {}),
            ("series 15m", path, day, day + DAY, {"interval": "15m", "stats": "min,max,count"}),
            ("series 1h Berlin", path, day - DAY, day + DAY, {"interval": "1h", **berlin}),
            ("series 1d Berlin", path, day - 6 * DAY, day + DAY, {"interval": "1d", **berlin}),
            ("summary", "/summary", day, day + DAY, {}),
        ):
            query = {"user_id": user, "start": iso(start), "end": iso(end), **extra}
            self._get(kind, target, query)
        if r % 4 == 0:
            self._users()

    def _users(self) -> None:
        after: str | None = None
        while not self._stop.is_set():
            query = {"prefix": "soak-", "limit": "1000", **({"after": after} if after else {})}
            status, body = self._get("users", "/users", query, gzip=False)
            after = json.loads(body).get("next") if status == 200 else None
            if after is None:
                return

    def _get(
        self, kind: str, path: str, query: dict[str, str], gzip: bool = True
    ) -> tuple[int, bytes]:
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self._conn.request("GET", f"{path}?{urlencode(query)}", headers=headers)
            resp = self._conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.counts[f"{kind}: connection error"] += 1
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._stop.wait(1)
            return 0, b""
        outcome = {200: "200", 404: "404"}.get(resp.status, f"{resp.status} error")
        self.counts[f"{kind}: {outcome}"] += 1
        return resp.status, body


def stream_topics(count: int) -> list[tuple[str, str, str]]:
    """(metric, user, interval) of ``count`` streams spread over both loads, all four
    routes and every metric, at 1s, 1m and 1h."""
    topics = []
    for i in range(count):
        route, metrics = ROUTES[i % len(ROUTES)]
        load, users = LOADS[(i // len(ROUTES)) % 2]
        metric = metrics[(i // 8) % len(metrics)]
        topics.append((metric, user_id(load, route, (i * 7) % users), ("1s", "1m", "1h")[i % 3]))
    return topics


@dataclass(slots=True)
class _Open:
    topic: int
    head: bytes = b""
    last_id: bytes | None = None


@dataclass(slots=True)
class Streams:
    """Event streams on raw sockets, read by one selector thread; a stream that ends or
    fails is opened again a second later with the ``Last-Event-ID`` it got to."""

    port: int
    topics: list[tuple[str, str, str]]
    events: int = 0
    opened: int = 0
    reconnects: int = 0
    refused: int = 0
    _open: dict[socket.socket, _Open] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def open_now(self) -> int:
        return sum(1 for s in list(self._open.values()) if s.head.endswith(b"\r\n\r\n"))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="streams", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        due: dict[int, float] = dict.fromkeys(range(len(self.topics)), 0.0)  # topic -> when
        last: dict[int, bytes | None] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for topic in [t for t, when in due.items() if when <= now]:
                del due[topic]
                opened = self._connect(topic, last.get(topic))
                if opened is None:
                    due[topic] = now + 1
                else:
                    sel.register(opened, selectors.EVENT_READ)
            for key, _ in sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                state = self._open[sock]
                if not self._read(sock, state):
                    sel.unregister(sock)
                    sock.close()
                    del self._open[sock]
                    last[state.topic] = state.last_id
                    due[state.topic] = time.monotonic() + 1
                    self.reconnects += 1
        for sock in self._open:
            sock.close()
        sel.close()

    def _connect(self, topic: int, last_id: bytes | None) -> socket.socket | None:
        metric, user, interval = self.topics[topic]
        resume = f"Last-Event-ID: {last_id.decode()}\r\n" if last_id else ""
        request = (
            f"GET /metrics/{metric}/stream?user_id={user}&interval={interval} HTTP/1.1\r\n"
            f"Host: soak\r\n{resume}\r\n"
        )
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(request.encode())
        except OSError:
            self.refused += 1
            return None
        sock.setblocking(False)
        self._open[sock] = _Open(topic, last_id=last_id)
        return sock

    def _read(self, sock: socket.socket, state: _Open) -> bool:
        """Take what arrived; False once the stream is over (or was never opened)."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        if not state.head.endswith(b"\r\n\r\n"):
            state.head += data
            if b"\r\n\r\n" not in state.head:
                return True
            head, _, data = state.head.partition(b"\r\n\r\n")
            state.head = head + b"\r\n\r\n"
            if not head.startswith(b"HTTP/1.1 200"):
                self.refused += 1
                return False
            self.opened += 1
        self.events += data.count(_EVENT)
        ids = _ID.findall(data)
        if ids:
            state.last_id = ids[-1]
        return True
