"""Accepting readings, for the routes and the shortcut alike: the request body read within
its limit, and validated rows submitted (202 only once durable), counted and answered."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import Receive, Scope

from service import metrics
from service.api.context import WorkerContext
from service.errors import Detail, PayloadTooLarge, RequestTimeout
from service.records import RecordsResult
from service.schema import MetricSpec, Rows

ACCEPTED_BODY = b'{"status":"accepted"}'


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes  # what was read
    whole: bool  # the body ended within the limit
    more: bool  # more of it may follow (not read yet)
    late: RequestTimeout | None = None  # the body deadline passed while reading
    gone: bool = False  # the client disconnected before the body ended


async def read_body(receive: Receive, limit: int) -> Body:
    """Read a request body up to ``limit`` bytes; stops at the first byte over it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            message = await receive()
        except RequestTimeout as exc:
            return Body(b"".join(chunks), False, True, exc)
        if message["type"] != "http.request":  # the client went away
            return Body(b"".join(chunks), False, False, gone=True)
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return Body(b"".join(chunks), False, more)
        if not more:
            return Body(b"".join(chunks), True, False)


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"body over {limit} bytes", [{"field": "body", "reason": f"at most {limit} bytes"}]
    )


async def accept(
    ctx: WorkerContext,
    scope: Scope,
    spec: MetricSpec,
    rows: Rows,
    batch: bool,
    rejected: int = 0,
    total: int = 0,
    errors: list[Detail] | None = None,
) -> bytes:
    """Submit ``rows`` (returns once durable), count them, note them on the request for
    its access-log line; the ``202`` body."""
    await ctx.ingestor.submit(spec.name, rows)
    count = len(rows)
    endpoint = "batch" if batch else "single"
    metrics.tally.inc(metrics.tally.child(metrics.READINGS_ACCEPTED, endpoint), count)
    state = scope.setdefault("state", {})
    state["accepted"] = count
    if not batch:
        return ACCEPTED_BODY
    state["rejected"] = rejected
    return batch_accepted_body(count, rejected, total or count, errors or [])


def batch_accepted_body(accepted: int, rejected: int, total: int, errors: list[Detail]) -> bytes:
    """The ``202`` body of a batch."""
    fields = {
        "status": "accepted",
        "accepted": accepted,
        "rejected": rejected,
        "total": total,
        "errors": errors,
    }
    return json.dumps(fields).encode()


async def accept_records(ctx: WorkerContext, scope: Scope, result: RecordsResult) -> bytes:
    """Submit the readings of valid records, every metric in one group commit (returns
    once all are durable), count the readings, note the records for the access log; the
    ``202`` body, which counts records."""
    await ctx.ingestor.submit_many({name: rows for name, rows in result.rows.items() if rows})
    readings = sum(map(len, result.rows.values()))
    metrics.tally.inc(metrics.tally.child(metrics.READINGS_ACCEPTED, "records"), readings)
    state = scope.setdefault("state", {})
    state["accepted"], state["rejected"] = result.accepted, result.rejected
    fields = {
        "status": "accepted",
        "accepted": result.accepted,
        "rejected": result.rejected,
        "total": result.total,
        "errors": result.errors,
        "by_metric": {name: len(rows) for name, rows in result.rows.items()},
    }
    return json.dumps(fields).encode()
