"""``GET /metrics``: Prometheus text format, merged over every worker when under gunicorn."""

from __future__ import annotations

import os

import anyio
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

router = APIRouter(tags=["operations"])


def _render() -> bytes:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


EXAMPLE = """\
# HELP hr_readings_accepted_total Readings acknowledged (durable per the durability mode).
# TYPE hr_readings_accepted_total counter
hr_readings_accepted_total{endpoint="single"} 1.0
"""


@router.get(
    "/metrics",
    operation_id="get_metrics",
    summary="Prometheus metrics, merged over every worker",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}, "example": EXAMPLE}},
        }
    },
)
async def prometheus_metrics() -> Response:
    return Response(await anyio.to_thread.run_sync(_render), media_type=CONTENT_TYPE_LATEST)
