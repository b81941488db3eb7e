"""The package installs on its own: a wheel of the ``service`` package only, with its
settings file and console scripts, that serves from outside the checkout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ops.server import ROOT, free_port
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.skip("no uv to build with")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([uv(), "build", "--wheel", "-o", str(out)], cwd=ROOT, check=True)
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_holds_the_package_its_settings_and_its_commands(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n) for n in names if n.endswith("entry_points.txt"))
        metadata = next(z.read(n) for n in names if n.endswith("METADATA")).decode()
    assert {n.split("/")[0] for n in names} == {
        "service",
        wheel.name.split("-")[0] + "-0.1.0.dist-info",
    }
    assert "service/gunicorn.conf.py" in names
    assert "service/py.typed" in names
    # the browser pages' assets, each vendored library with its licence
    for asset in ("dashboard/index.html", "dashboard/main.js", "vendor/VERSIONS.txt"):
        assert f"service/static/{asset}" in names
    for library in ("uplot", "swagger-ui", "redoc"):
        assert f"service/static/vendor/{library}/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "ops/"))]
    assert b"hr-serve = service.serve:main" in entry_points
    assert b"hr-maint = service.maintenance:cli" in entry_points
    assert "License-Expression: MIT" in metadata


def test_an_installed_wheel_serves_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([uv(), "venv", "--python", sys.executable, str(venv)], check=True)
    # the dependencies come from uv's cache, filled by the checkout's own sync
    subprocess.run(
        [uv(), "pip", "install", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True,
    )
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HR_", "PROMETHEUS"))},
        "HR_DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(venv / "bin" / "hr-serve"), "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            cwd=tmp_path,  # not the checkout: everything comes from the installed package
            env=env,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    try:
        wait_until(lambda: log.read_text().count("Application startup complete") >= 2, 60, "start")
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path in ("/health", "/dashboard", "/static/vendor/uplot/uPlot.iife.min.js", "/docs"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, path
        conn.close()
        maint = subprocess.run(
            [str(venv / "bin" / "hr-maint"), "verify"], env=env, capture_output=True, text=True
        )
        assert maint.returncode == 0, maint.stdout + maint.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
