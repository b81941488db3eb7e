"""Request bodies as JSON documents, decoded leniently: the slow paths' one decoder.

UTF-8 only, nesting at most ``MAX_DEPTH`` levels deep; numbers out of float range and
``NaN`` decode (to ``inf``/``nan``), so that validation reports them against the field
that holds them instead of failing the whole body.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

from service.errors import field_error

MAX_DEPTH = 64  # JSON nesting a body may have; a reading needs 2, a batch 3


def decode_leniently(body: bytes) -> object:
    """The JSON document ``body`` holds; raises ``InvalidInput`` naming ``body``."""
    # the stdlib decoder turns 1e309 and NaN into floats, so one out-of-range number is
    # reported against its reading instead of failing the readings beside it
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise field_error("body", f"not valid UTF-8 (byte {exc.start})") from exc
    if _depth(text) > MAX_DEPTH:
        raise field_error("body", f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise field_error("body", f"not valid JSON ({reason})") from exc


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (an upper bound when
    the text is malformed); C-level passes only, so an 8 MB body costs milliseconds."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP, brackets)), default=0)
