"""Text log lines cannot be forged by request data: control characters are escaped."""

from __future__ import annotations

import io
import json
import logging
import os
import runpy
from pathlib import Path

import pytest

from service.logs import AccessLog, JsonFormatter, TextFormatter, printable

EVIL = (
    "/metrics/x\n2026-01-01T00:00:00.000Z [1] INFO service.access GET /forged 200\r\x1b[2J\x7f\x85"
)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def test_printable_escapes_c0_c1_and_del_and_leaves_text_alone() -> None:
    assert printable("/plain/päth ok") == "/plain/päth ok"
    assert printable("a\nb\rc\td\x1be\x7ff\x85g\u2028h") == (
        "a\\nb\\rc\\td\\x1be\\x7ff\\x85g\\u2028h"
    )


def test_a_request_path_cannot_forge_an_access_line() -> None:
    r, w = os.pipe()
    log = AccessLog()
    log.configure(enabled=True, json_lines=False, fd=w)
    log.request("GET", EVIL, "unmatched", 404, 0.001, "id", "w1")  # no loop: written at once
    text = read_all(r).decode()
    assert text.count("\n") == 1
    assert "GET /metrics/x\\n2026-01-01T00:00:00.000Z" in text
    assert "\\r\\x1b[2J\\x7f\\x85 404 1.0ms" in text
    log.configure(enabled=True, json_lines=True, fd=w)
    log.request("GET", EVIL, "unmatched", 404, 0.001, "id", "w1")
    line = read_all(r).decode()
    assert line.count("\n") == 1
    assert json.loads(line)["path"] == EVIL  # JSON keeps the exact path, encoded
    os.close(r)
    os.close(w)


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.log_injection")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, out


def test_service_text_lines_escape_messages_and_indent_tracebacks() -> None:
    logger, out = capture(TextFormatter("%(levelname)s %(name)s %(message)s"))
    logger.warning("bad id %s", "u1\nERROR service forged\x1b")
    try:
        raise ValueError("boom\nCRITICAL service forged too")
    except ValueError:
        logger.exception("failed on %s", "/p\r")
    lines = out.getvalue().splitlines()
    assert lines[0] == "WARNING test.log_injection bad id u1\\nERROR service forged\\x1b"
    assert lines[1] == "ERROR test.log_injection failed on /p\\r"
    assert all(line.startswith("    ") for line in lines[2:])  # only records at column 0
    assert "    CRITICAL service forged too" in lines


def test_json_lines_stay_one_line_and_keep_the_text() -> None:
    logger, out = capture(JsonFormatter())
    logger.warning("bad id %s", "u1\n\x1b\x85\u2028")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["message"] == "bad id u1\n\x1b\x85\u2028"


def test_gunicorn_and_uvicorn_text_lines_use_the_escaping_formatter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # keeps the config inert
    monkeypatch.setenv("HR_LOG_FORMAT", "text")
    config = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
    logconfig = config["logconfig_dict"]
    assert logconfig["handlers"]["stderr"]["formatter"] == "text"
    spec = dict(logconfig["formatters"]["text"])
    factory = spec.pop("()")
    assert factory == "service.logs.TextFormatter"
    logger, out = capture(TextFormatter(**spec))
    logger.warning("Invalid request %s", "GET /\nforged")
    assert out.getvalue().count("\n") == 1
