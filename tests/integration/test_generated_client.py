"""A client generated from the served OpenAPI document by ``openapi-python-client`` posts
readings to a real server and reads the series back, typed as the document says."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.conftest import request

pytestmark = pytest.mark.integration

PACKAGE = "hr_client"
AT = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)


def generate(document: object, where: Path) -> None:
    """``openapi-python-client generate`` into ``where/PACKAGE``; offline, no formatter run."""
    spec, config = where / "openapi.json", where / "config.json"
    spec.write_text(json.dumps(document))
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    argv = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec)]
    argv += ["--output-path", str(where / PACKAGE), "--meta", "none", "--config", str(config)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout  # every schema became a class


def endpoint(group: str, operation: str):
    """The generated module of one operation (``sync``, ``sync_detailed`` ...)."""
    return importlib.import_module(f"{PACKAGE}.api.{group}.{operation}")


@pytest.fixture
def client(server_factory, tmp_path, monkeypatch):
    """A generated client of a fresh server, made from the document that server serves."""
    server = server_factory(workers=1)
    status, _, document = request(server, "GET", "/openapi.json")
    assert status == 200
    generate(document, tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    package = importlib.import_module(PACKAGE)
    try:
        with package.Client(base_url=server.url, raise_on_unexpected_status=True) as client:
            yield client
    finally:
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_generated_client_posts_readings_and_reads_series_back(client) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    reading = models.HeartRateReading(
        user_id="u1", device_id="device_a", timestamp=AT, heart_rate=72.5
    )
    sent = endpoint("ingest", "post_heart_rate_reading").sync_detailed(client=client, body=reading)
    assert (sent.status_code, sent.parsed.status) == (202, "accepted")
    steps = [
        models.StepsReading(
            user_id="u1", device_id="device_a", timestamp=AT + timedelta(seconds=s), steps=n
        )
        for s, n in ((0, 40), (30, 2))
    ]
    batch = endpoint("ingest", "post_steps_batch").sync(
        client=client, body=models.StepsBatch(readings=steps)
    )
    assert (batch.accepted, batch.rejected, batch.errors) == (2, 0, [])

    hour = {"user_id": "u1", "start": AT, "end": AT + timedelta(hours=1)}
    heart_rate = endpoint("query", "get_heart_rate_series").sync(
        client=client, **hour, stats="min,max,count"
    )
    assert isinstance(heart_rate, models.HeartRateSeries)
    assert heart_rate.count == 1
    (bucket,) = heart_rate.data
    assert (bucket.timestamp, bucket.heart_rate, bucket.device_id) == (AT, 72.5, "device_a")
    assert (bucket.min_, bucket.max_, bucket.count) == (72.5, 72.5, 1)

    get_steps = endpoint("query", "get_steps_series")
    interval = models.GetStepsSeriesInterval.EVERY_1H
    hourly = get_steps.sync(client=client, **hour, interval=interval, tz="Europe/Berlin")
    (bucket,) = hourly.data
    assert bucket.timestamp == AT  # 11:00+01:00, the local hour's start
    assert bucket.timestamp.utcoffset() == timedelta(hours=1)
    assert (bucket.steps, type(bucket.steps)) == (42, int)

    missing = get_steps.sync(client=client, **{**hour, "user_id": "u2"})
    assert isinstance(missing, models.ErrorBody)
    assert missing.error == "not_found"
