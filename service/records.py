"""Records of several metrics (``POST /readings``): JSON bytes -> rows per metric.

A record is ``user_id``, ``device_id`` and ``timestamp`` plus one or more metric fields
(``heart_rate``, ``steps``, ``calories``); each present field becomes one reading of its
metric. A record with no metric field, or with any bad field, is rejected whole. As for
batches, a fast path decodes a well-formed valid body with msgspec; any other body is
validated record by record with the single readings' own field checks, so both paths
accept exactly the same records and the slow one names every bad field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import Any

import msgspec

from service.bodies import decode_leniently
from service.errors import Detail, field_error
from service.schema import METRICS, Rows
from service.text import all_printable, plain_text
from service.timestamps import parse_timestamps_ms
from service.validation import (
    DEVICE_ID_MAX,
    MISSING,
    USER_ID_MAX,
    DeviceId,
    UserId,
    check_number,
    check_size,
    check_text,
    check_timestamp,
    id_texts,
    span_days,
    value_type,
)

NO_METRIC = "must hold at least one of " + ", ".join(spec.field for spec in METRICS.values())
_NOTHING = (msgspec.UNSET,) * len(METRICS)  # a record's metric fields, none present


def _no_rows() -> dict[str, Rows]:
    return {name: Rows() for name in METRICS}


@dataclass(slots=True)
class RecordsResult:
    total: int  # records in the body
    rows: dict[str, Rows] = field(default_factory=_no_rows)  # every metric, maybe empty
    errors: list[Detail] = field(default_factory=list)
    rejected: int = 0  # records with at least one error

    @property
    def accepted(self) -> int:
        return self.total - self.rejected


@cache
def _struct_types() -> tuple[type[msgspec.Struct], object]:
    """A record (each metric field optional, never null) and a body of records."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("user_id", UserId),
        ("device_id", DeviceId),
        ("timestamp", str),
    ]
    fields += [
        (spec.field, value_type(spec) | msgspec.UnsetType, msgspec.UNSET)
        for spec in METRICS.values()
    ]
    record = msgspec.defstruct("record", fields, gc=False)  # no cycles: no GC tracking
    wrapped = msgspec.defstruct("records", [("readings", list[record])])  # type: ignore[valid-type]
    return record, wrapped | list[record]  # type: ignore[valid-type]


def validate_records(body: bytes, max_batch: int, max_days: int) -> RecordsResult:
    """``{"readings": [...]}`` or a bare array of records; good records are kept, bad ones
    reported by index. Like a batch, the kept records may span at most ``max_days``
    distinct UTC days, and more than ``max_batch`` records are refused (413)."""
    items = _decode(body)
    result = None
    if items is not None:
        check_size(len(items), max_batch, "records")
        result = _parse(items, plain_text(body))
    if result is None:
        result = _validate_slowly(body, max_batch)
    stamps = [ts for rows in result.rows.values() for ts in rows.ts]
    days = span_days(stamps, max_days)
    if days > max_days:
        raise field_error(
            "readings", f"the records span {days} UTC days; a request may span at most {max_days}"
        )
    return result


def _decode(body: bytes) -> list[Any] | None:
    """The records of a body whose every field but the timestamps is valid, else None."""
    _, body_type = _struct_types()
    try:
        doc: Any = msgspec.json.decode(body, type=body_type)
    # as in service.validation: whatever msgspec refuses, the slow path names
    except (ValueError, RecursionError):
        return None
    items: list[Any] = doc if isinstance(doc, list) else doc.readings
    return items


def _parse(items: list[Any], plain: bool) -> RecordsResult | None:
    """Decoded records as rows per metric when every one is valid, else None; ``plain``:
    the body's strings are all printable (``plain_text``)."""
    if not items:
        return RecordsResult(0)
    # column by column, without a Python call per record: a list comprehension per field
    # (as ``service.validation`` does), a C-level ``map`` per metric
    devices = [item.device_id for item in items]
    stamps = parse_timestamps_ms([item.timestamp for item in items])
    ids = id_texts([item.user_id for item in items])
    values = [list(map(attrgetter(spec.field), items)) for spec in METRICS.values()]
    if None in stamps or not (plain or all_printable(ids, devices)):
        return None
    if _NOTHING in zip(*values, strict=True):  # a record with no metric field
        return None
    result = RecordsResult(len(items))
    for name, column in zip(METRICS, values, strict=True):
        present = list(map(is_not, column, repeat(msgspec.UNSET)))
        rows = result.rows[name]
        rows.user_id = list(compress(ids, present))
        rows.device_id = list(compress(devices, present))
        rows.ts = list(compress(stamps, present))  # type: ignore[arg-type]
        rows.value = list(map(float, compress(column, present)))
    return result


def _validate_slowly(body: bytes, max_batch: int) -> RecordsResult:
    doc = decode_leniently(body)
    items = doc.get("readings", MISSING) if isinstance(doc, dict) else doc
    if items is MISSING:
        raise field_error("readings", "field required")
    if not isinstance(items, list):
        where = "readings" if isinstance(doc, dict) else "body"
        raise field_error(where, "must be a list of records, or an object with a 'readings' list")
    check_size(len(items), max_batch, "records")
    result = RecordsResult(len(items))
    for index, item in enumerate(items):
        problems = _check_record(item, result.rows)
        result.errors += [{"index": index, "field": f, "reason": r} for f, r in problems]
        result.rejected += bool(problems)
    return result


def _check_record(item: object, into: dict[str, Rows]) -> list[tuple[str, str]]:
    """Validate one decoded record; when it is valid, add its readings to ``into``."""
    if not isinstance(item, dict):
        return [("record", "must be a JSON object")]
    problems: list[tuple[str, str]] = []
    user_id = check_text(item, "user_id", USER_ID_MAX, problems, allow_int=True)
    device_id = check_text(item, "device_id", DEVICE_ID_MAX, problems, allow_int=False)
    ts = check_timestamp(item, problems)
    values = [
        (name, check_number(item, spec, problems))
        for name, spec in METRICS.items()
        if spec.field in item
    ]
    if not values:
        problems.append(("metrics", NO_METRIC))
    if problems or user_id is None or device_id is None or ts is None:
        return problems
    for name, value in values:
        assert value is not None  # a bad value is a problem
        into[name].add(user_id, device_id, ts, value)
    return problems
