"""promtool, when installed, accepts the shipped Prometheus config and alerting rules."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.unit.test_monitoring_files import MONITORING

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize(("kind", "name"), [("config", "prometheus.yml"), ("rules", "alerts.yml")])
def test_promtool_accepts_the_files(kind: str, name: str) -> None:
    result = subprocess.run(
        ["promtool", "check", kind, str(MONITORING / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
