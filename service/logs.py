"""Logging set-up: JSON lines for machines, plain text for terminals."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import msgspec

from service.config import Settings
from service.deferral import at_end_of_turn


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """Text lines that request data cannot forge: control characters in the message are
    escaped, and every further line (a traceback, whose last line repeats an exception
    message) is indented, so only a real record starts at column 0."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        first, sep, rest = super().format(record).partition("\n")
        if not sep:
            return first
        return first + "".join("\n    " + printable(line) for line in rest.split("\n"))


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every unprintable character (C0, C1, DEL, line separators, format
    characters) written as an escape: ``\\n``, ``\\x1b``, ``\\u2028``."""
    if text.isprintable():  # the common case: no copy
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]  # the timestamp's fraction, by millisecond


class _AccessEntry(msgspec.Struct, omit_defaults=True):
    """One JSON access line: the keys of every log line, then the request's."""

    ts: str
    level: str
    logger: str
    message: str
    method: str
    path: str
    route: str
    status: int
    duration_ms: float
    request_id: str
    worker: str
    accepted: int | None = None
    rejected: int | None = None
    key: str | None = None  # the API key's name (never the secret)


class AccessLog:
    """The access log: one line per request, in the format of the other logs, built
    without the ``logging`` machinery and written to stderr once per event-loop turn
    (one ``write`` for every request finished in that turn).

    ``logging`` costs ~40 us per line here, a third of a single-reading request's CPU;
    a line encoded from a msgspec struct costs ~4 us. A line is written before the loop
    waits for more I/O, so at most the lines of the current turn are lost if the process
    is killed.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._json = True
        self._fd = 2
        self._prefix = b""  # text lines: " [pid] INFO service.access "
        self._lines: list[bytes] = []
        self._second = -1
        self._stamp = ""
        self._encode = msgspec.json.Encoder().encode

    def configure(self, *, enabled: bool, json_lines: bool, fd: int) -> None:
        self.flush()
        self.enabled, self._json, self._fd = enabled, json_lines, fd
        self._prefix = f" [{os.getpid()}] INFO service.access ".encode()

    # longer than 40 lines: one access line per request, built without helper calls (hot path)
    def request(
        self,
        method: str,
        path: str,
        route: str,
        status: int,
        elapsed_s: float,
        request_id: str,
        worker: str,
        accepted: int | None = None,
        rejected: int | None = None,
        key: str | None = None,
    ) -> None:
        """Queue one line; it is written at the end of the current loop turn."""
        now_ms = time.time_ns() // 1_000_000
        second, ms = divmod(now_ms, 1000)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = self._stamp + _MILLIS[ms]
        # integer arithmetic: formatting floats costs more than the rest of the line
        us = int(elapsed_s * 1_000_000)
        tenths = (us + 50) // 100  # of a millisecond, rounded half up
        if not self._json and not (path.isprintable() and method.isprintable()):
            # uvicorn decodes %0a in a URL into the path: a newline would forge a line
            method, path = printable(method), printable(path)
        message = f"{method} {path} {status} {tenths // 10}.{tenths % 10}ms"
        if self._json:
            entry = _AccessEntry(
                stamp,
                "info",
                "service.access",
                message,
                method,
                path,
                route,
                status,
                us / 1000,  # milliseconds with 3 decimals
                request_id,
                worker,
                accepted,
                rejected,
                key,
            )
            line = self._encode(entry) + b"\n"
        else:
            if key is not None:  # key names are checked at creation: no control characters
                message += f" key={key}"
            line = stamp.encode() + self._prefix + message.encode() + b"\n"
        first = not self._lines
        self._lines.append(line)
        if first and not at_end_of_turn(self.flush):
            self.flush()  # no loop: write at once

    def flush(self) -> None:
        if not self._lines:
            return
        data = memoryview(b"".join(self._lines))
        self._lines.clear()
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # like logging: a log that cannot be written does not fail the request


access_log = AccessLog()


def json_lines_wanted(settings: Settings) -> bool:
    return settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )


def configure(settings: Settings) -> None:
    """Service logs to stderr (gunicorn's error log): JSON lines, or text in a terminal."""
    logger = logging.getLogger("service")
    logger.setLevel(settings.log_level)
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stderr (tests, embedding)
        fd = 2
    access_log.configure(
        enabled=settings.access_log and logger.isEnabledFor(logging.INFO),
        json_lines=json_lines_wanted(settings),
        fd=fd,
    )
    if logger.handlers:  # under gunicorn: its logconfig_dict set the handlers
        return
    handler = logging.StreamHandler()
    if json_lines_wanted(settings):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
