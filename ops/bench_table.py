"""Where the benchmarked service keeps its table (``--store``): the local store, a Delta table
on a local path, or a Delta table on an S3 endpoint (``moto_server`` on 127.0.0.1, a
stand-in that checks the S3 code path works; its speed says nothing about S3's).

``table(kind, tmp, logs)`` yields a ``Table``: the environment a server (and the query
store's loader) needs, and how to read the table. The moto server is stopped on exit.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench_common import log
from ops.server import free_port

STORES = ("local", "delta", "delta-s3")
BUCKET = "bench"
MOTO_READY_S = 30.0


@dataclass(frozen=True, slots=True)
class Table:
    kind: str
    env: dict[str, str] = field(default_factory=dict)  # HR_STORE, HR_TABLE_URI, AWS_*

    @property
    def delta(self) -> bool:
        return self.kind != "local"

    def uri(self, name: str) -> str:
        """A table of its own for one phase (``HR_TABLE_URI``)."""
        return f"{self.env['HR_TABLE_URI']}/{name}"

    def server_env(self, name: str) -> dict[str, str]:
        """A server's extra environment for the phase's table ``name`` (nothing: local)."""
        return {**self.env, "HR_TABLE_URI": self.uri(name)} if self.delta else {}

    def options(self) -> dict[str, str] | None:
        """The table's storage options, as the service derives them (``AWS_*``)."""
        return {k: v for k, v in self.env.items() if k.startswith("AWS_")} or None

    def describe(self) -> str:
        if self.kind == "local":
            return "local (this data directory's manifest and fragments)"
        if self.kind == "delta":
            return f"delta, a table on a local path ({self.env['HR_TABLE_URI']})"
        return (
            f"delta-s3, a table on moto_server at {self.env['AWS_ENDPOINT_URL']} "
            "(a correctness stand-in: its speed is not S3's)"
        )


@contextlib.contextmanager
def table(kind: str, tmp: Path, logs: Path) -> Iterator[Table]:
    if kind == "local":
        yield Table(kind)
    elif kind == "delta":
        root = tmp / "tables"
        root.mkdir()
        yield Table(kind, {"HR_STORE": "delta", "HR_TABLE_URI": str(root)})
    else:
        with moto_endpoint(logs / "moto.log") as endpoint:
            yield Table(
                kind,
                {
                    "HR_STORE": "delta",
                    "HR_TABLE_URI": f"s3://{BUCKET}",
                    "AWS_ENDPOINT_URL": endpoint,
                    "AWS_ALLOW_HTTP": "true",
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_REGION": "us-east-1",
                },
            )


@contextlib.contextmanager
def moto_endpoint(log_file: Path, bucket: str = BUCKET) -> Iterator[str]:
    """A moto S3 endpoint on a free loopback port with the bucket ``bucket``; its URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            log(f"started moto_server (pid {proc.pid}) at {endpoint}")
            _wait(endpoint, proc)
            put = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
            with urllib.request.urlopen(put, timeout=10):
                pass
            yield endpoint
        finally:
            proc.kill()
            proc.wait(timeout=30)
            log(f"stopped moto_server (pid {proc.pid})")


def _wait(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + MOTO_READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto_server did not answer within {MOTO_READY_S:.0f}s")
