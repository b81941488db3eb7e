"""Logging set-up: JSON lines for machines, plain text for terminals."""

from __future__ import annotations

import json
import logging
import sys
import time

from service.config import Settings


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


def configure(settings: Settings) -> None:
    """Service logs to stderr (gunicorn's error log): JSON lines, or text in a terminal."""
    logger = logging.getLogger("service")
    logger.setLevel(settings.log_level)
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    json_lines = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    access = logging.getLogger("service.access")
    access.setLevel(logging.INFO if settings.access_log else logging.WARNING)
