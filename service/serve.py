"""``hr-serve``: gunicorn with the service's settings file; arguments go to gunicorn.

The settings file is ``gunicorn.conf.py``: beside the package in a checkout, inside it in
an installed wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path


def settings_file() -> Path:
    installed = Path(__file__).with_name("gunicorn.conf.py")
    return installed if installed.exists() else Path(__file__).resolve().parents[1] / installed.name


def main() -> None:
    from gunicorn.app.wsgiapp import run  # type: ignore[import-untyped]

    sys.argv = [sys.argv[0], "-c", str(settings_file()), *sys.argv[1:]]
    run()
