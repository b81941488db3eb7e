"""Request-body validation: JSON bytes -> columnar rows plus per-reading errors.

A fast path decodes well-formed bodies with msgspec straight into typed structs; any
body the fast path rejects is validated again item by item, so that every bad field
of every bad reading is reported and every good reading is kept. Both paths parse
timestamps with the same function, so they accept exactly the same readings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import repeat
from operator import attrgetter, floordiv, itemgetter, sub
from typing import Annotated, Any

import msgspec

from service.catalog import MetricSpec
from service.errors import Detail, InvalidInput, PayloadTooLarge, field_error

USER_ID_MAX = 128
DEVICE_ID_MAX = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISSING = object()

UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=USER_ID_MAX)] | int
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=DEVICE_ID_MAX)]


@dataclass(slots=True)
class Rows:
    """Validated readings of one metric, column by column; ``ts`` in UTC epoch ms."""

    user_id: list[str] = field(default_factory=list)
    device_id: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def extend(self, other: Rows) -> None:
        self.user_id.extend(other.user_id)
        self.device_id.extend(other.device_id)
        self.ts.extend(other.ts)
        self.value.extend(other.value)

    def add(self, user_id: str, device_id: str, ts: int, value: float) -> None:
        self.user_id.append(user_id)
        self.device_id.append(device_id)
        self.ts.append(ts)
        self.value.append(value)


@dataclass(slots=True)
class BatchResult:
    rows: Rows
    errors: list[Detail]
    total: int


def parse_timestamp_ms(text: str) -> int | None:
    """ISO 8601 date-time -> UTC epoch milliseconds (floor); no offset means UTC."""
    if not 16 <= len(text) <= 40 or text[10] not in "Tt ":
        return None
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


_MS = timedelta(milliseconds=1)
_TEN = itemgetter(10)
_USER = attrgetter("user_id")
_DEVICE = attrgetter("device_id")
_TIMESTAMP = attrgetter("timestamp")


def parse_timestamps_ms(texts: list[str]) -> list[int | None]:
    """``parse_timestamp_ms`` of each text, each distinct text parsed once.

    Readings of a batch often share their timestamps (a gateway sends many devices'
    readings of the same seconds). Distinct texts of the usual shape are parsed in
    C-level passes, without a Python frame per text (see ``_parse_usual``).
    """
    distinct = dict.fromkeys(texts)
    keys = list(distinct)
    parsed = _parse_usual(keys) if len(keys) >= 8 else None
    if parsed is None:
        parsed = [parse_timestamp_ms(text) for text in keys]
    if len(keys) == len(texts):
        return parsed
    distinct.update(zip(keys, parsed, strict=True))
    return list(map(distinct.__getitem__, texts))


def _parse_usual(texts: list[str]) -> list[int | None] | None:
    """``parse_timestamp_ms`` of texts that are all ASCII, upper case, 16 to 40 characters
    with ``T`` as the separator, and carry an offset or ``Z``: there it is exactly
    ``fromisoformat`` and a floor division of the distance from the epoch. None when
    a text is of another shape or does not parse."""
    joined = "".join(texts)
    if not (
        joined.isascii()
        and joined.upper() == joined
        and min(map(len, texts)) >= 16
        and max(map(len, texts)) <= 40
        and set(map(_TEN, texts)) == {"T"}
    ):
        return None
    try:
        moments = map(datetime.fromisoformat, texts)
        return list(map(floordiv, map(sub, moments, repeat(_EPOCH)), repeat(_MS)))
    except (ValueError, TypeError):  # a text that does not parse, or one without offset
        return None


@cache
def _struct_types(spec: MetricSpec) -> tuple[type[msgspec.Struct], type[msgspec.Struct]]:
    value = Annotated[float, msgspec.Meta(ge=spec.minimum, le=spec.maximum)]
    reading = msgspec.defstruct(
        f"{spec.name}_reading",
        [("user_id", UserId), ("device_id", DeviceId), ("timestamp", str), (spec.field, value)],
        gc=False,  # strings and numbers only: no cycles, so no GC tracking per reading
    )
    batch = msgspec.defstruct(f"{spec.name}_batch", [("readings", list[reading])])  # type: ignore[valid-type]
    return reading, batch


def parse_one(body: bytes, spec: MetricSpec) -> Rows | None:
    """The fast path alone: the reading of a well-formed valid body, else None."""
    reading_type, _ = _struct_types(spec)
    try:
        item: Any = msgspec.json.decode(body, type=reading_type)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    ts = parse_timestamp_ms(item.timestamp)
    if ts is None:
        return None
    return Rows([str(item.user_id)], [item.device_id], [ts], [getattr(item, spec.field)])


def validate_one(body: bytes, spec: MetricSpec) -> Rows:
    """One reading; raises ``InvalidInput`` naming every bad field."""
    rows = parse_one(body, spec)
    if rows is not None:
        return rows
    rows = Rows()
    problems = _check_item(_decode_leniently(body), spec, rows)
    if problems:
        raise InvalidInput("invalid reading", [{"field": f, "reason": r} for f, r in problems])
    return rows


def parse_batch(body: bytes, spec: MetricSpec, max_batch: int) -> Rows | None:
    """The fast path alone: the rows of a well-formed batch of 1 to ``max_batch`` readings
    that are all valid, else None (``validate_batch`` then says what is wrong)."""
    items = _decode_batch(body, spec)
    if items is None or not 0 < len(items) <= max_batch:
        return None
    rows = _columns(items, spec)
    return None if None in rows.ts else rows


def validate_batch(body: bytes, spec: MetricSpec, max_batch: int) -> BatchResult:
    """``{"readings": [...]}``; good readings are kept, bad ones reported by index."""
    items = _decode_batch(body, spec)
    if items is None:
        return _validate_batch_slowly(body, spec, max_batch)
    _check_size(len(items), max_batch)
    rows = _columns(items, spec)
    if None not in rows.ts:
        return BatchResult(rows, [], len(items))
    # only the timestamps can still be wrong: the decoder checked everything else
    errors: list[Detail] = []
    kept = Rows()
    for index, ts in enumerate(rows.ts):
        if ts is None:
            errors.append({"index": index, "field": "timestamp", "reason": _TS_REASON})
        else:
            kept.add(rows.user_id[index], rows.device_id[index], ts, rows.value[index])
    return BatchResult(kept, errors, len(items))


def _decode_batch(body: bytes, spec: MetricSpec) -> list[Any] | None:
    """The readings of a body whose every field but the timestamps is valid, else None."""
    _, batch_type = _struct_types(spec)
    try:
        batch: Any = msgspec.json.decode(body, type=batch_type)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    readings: list[Any] = batch.readings
    return readings


def _columns(items: list[Any], spec: MetricSpec) -> Rows:
    """Decoded readings column by column; a timestamp that does not parse is None."""
    stamps = parse_timestamps_ms(list(map(_TIMESTAMP, items)))
    users = list(map(str, map(_USER, items)))  # an integer id becomes its decimal text
    return Rows(users, list(map(_DEVICE, items)), stamps, list(map(attrgetter(spec.field), items)))  # type: ignore[arg-type]


def _validate_batch_slowly(body: bytes, spec: MetricSpec, max_batch: int) -> BatchResult:
    doc = _decode_leniently(body)
    if not isinstance(doc, dict):
        raise field_error("body", "must be a JSON object with a 'readings' list")
    readings = doc.get("readings", _MISSING)
    if readings is _MISSING:
        raise field_error("readings", "field required")
    if not isinstance(readings, list):
        raise field_error("readings", "must be a list of readings")
    _check_size(len(readings), max_batch)
    rows, errors = Rows(), list[Detail]()
    for index, item in enumerate(readings):
        for name, reason in _check_item(item, spec, rows):
            errors.append({"index": index, "field": name, "reason": reason})
    return BatchResult(rows, errors, len(readings))


def _decode_leniently(body: bytes) -> object:
    # the stdlib decoder turns 1e309 and NaN into floats, so one out-of-range number is
    # reported against its reading instead of failing the readings beside it
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise field_error("body", f"not valid JSON ({reason})") from exc


def _check_size(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise PayloadTooLarge(
            f"{count} readings exceed the batch limit of {max_batch}",
            [{"field": "readings", "reason": f"at most {max_batch} readings per batch"}],
        )


_TS_REASON = "must be an ISO 8601 date-time such as 2024-01-15T10:00:00Z"


def _check_item(item: object, spec: MetricSpec, rows: Rows) -> list[tuple[str, str]]:
    """Validate one decoded reading; on success append it to ``rows``."""
    if not isinstance(item, dict):
        return [("reading", "must be a JSON object")]
    problems: list[tuple[str, str]] = []
    user_id = _text(item, "user_id", USER_ID_MAX, problems, allow_int=True)
    device_id = _text(item, "device_id", DEVICE_ID_MAX, problems, allow_int=False)
    raw_ts = item.get("timestamp", _MISSING)
    ts = parse_timestamp_ms(raw_ts) if isinstance(raw_ts, str) else None
    if raw_ts is _MISSING:
        problems.append(("timestamp", "field required"))
    elif ts is None:
        problems.append(("timestamp", _TS_REASON))
    value = _number(item, spec, problems)
    if problems or user_id is None or device_id is None or ts is None or value is None:
        return problems
    rows.add(user_id, device_id, ts, value)
    return problems


def _text(
    item: dict[str, object],
    name: str,
    limit: int,
    problems: list[tuple[str, str]],
    *,
    allow_int: bool,
) -> str | None:
    raw = item.get(name, _MISSING)
    if raw is _MISSING:
        problems.append((name, "field required"))
        return None
    if allow_int and isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        kind = "a string or an integer" if allow_int else "a string"
        problems.append((name, f"must be {kind}"))
        return None
    if not 1 <= len(raw) <= limit:
        problems.append((name, f"must be 1 to {limit} characters long"))
        return None
    return raw


def _number(
    item: dict[str, object], spec: MetricSpec, problems: list[tuple[str, str]]
) -> float | None:
    raw = item.get(spec.field, _MISSING)
    if raw is _MISSING:
        problems.append((spec.field, "field required"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        problems.append((spec.field, "must be a JSON number"))
        return None
    value = float(raw) if abs(raw) < 1e300 else float("inf")
    if not spec.minimum <= value <= spec.maximum:
        problems.append((spec.field, f"must be between {spec.minimum:g} and {spec.maximum:g}"))
        return None
    return value
