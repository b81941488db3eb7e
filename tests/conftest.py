from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import hypothesis
import pytest
from starlette.testclient import TestClient

from service.api.context import WorkerContext
from service.app import create_app
from service.config import Settings

# no per-example time limit: on 2 busy cores a slow example is noise, not a failure
hypothesis.settings.register_profile("service", deadline=None)
hypothesis.settings.load_profile("service")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", flush_interval_s=3600, recovery_interval_s=3600)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def make_client(settings: Settings, **changes: object) -> TestClient:
    return TestClient(create_app(replace(settings, **changes)))  # type: ignore[arg-type]


def context(c: TestClient) -> WorkerContext:
    """The worker context of an in-process app (its store, ingestor, reader)."""
    ctx = c.app.api.state.context  # type: ignore[attr-defined]
    assert isinstance(ctx, WorkerContext)
    return ctx


def flush(c: TestClient) -> None:
    """Flush the in-process app's buffer to a fragment now."""
    c.portal.call(context(c).ingestor.flusher.flush)  # type: ignore[union-attr]
