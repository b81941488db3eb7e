"""The compaction child process: one pass over a data directory, its report on stdout.

A worker starts ``python -m service.compaction_process --data-dir DIR ...`` when the
manifest shows work (see ``ingest.compactor``) and counts the report it prints: one line
of JSON, the ``Report`` fields plus ``peak_rss_bytes``, or ``null`` when another process
holds the compaction lock. The process writes no metrics of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from service import logs
from service.config import Settings
from service.storage import erasure
from service.storage.compaction import Report, compact
from service.storage.retention import Retention
from service.storage.store import Store, open_store


def stop_on_term(with_parent: bool) -> None:
    """SIGTERM ends a compaction pass cleanly: the merge in progress deletes what it wrote
    and never reaches the manifest; merges already committed stay. With ``with_parent``, so
    does the death of the process that started this one (a worker killed by gunicorn leaves
    no merge running behind it)."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if with_parent:
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.compaction_process")
    parser.add_argument("--data-dir", type=Path, required=True, help="the data root")
    parser.add_argument("--full", action="store_true", help="merge every day to level 2")
    parser.add_argument("--min-files", type=int, help="files that trigger a merge")
    parser.add_argument("--grace-s", type=float, help="retired files' grace period")
    parser.add_argument("--max-rows", type=int, help="input rows per merge step")
    parser.add_argument("--retention-days", type=int, help="raw readings kept, in days")
    parser.add_argument("--rollup-retention-days", type=int, help="rollups kept, in days")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority")
    parser.add_argument(
        "--stop-with-parent", action="store_true", help="stop when the starting process is gone"
    )
    return parser


def run_pass(store: Store, settings: Settings, args: argparse.Namespace) -> Report | None:
    """One pass with the options ``args`` gives (``full``, ``min_files``, ``grace_s``,
    ``max_rows``, retention), the settings' values where it gives none; None when another
    runs."""
    # ``ops/maint compact`` has no retention options: the environment's settings hold
    raw = getattr(args, "retention_days", None)
    rolled = getattr(args, "rollup_retention_days", None)
    retention = Retention(
        settings.retention_days if raw is None else raw,
        settings.rollup_retention_days if rolled is None else rolled,
    )
    report = compact(
        store,
        force=args.full,
        min_files=args.min_files or settings.compact_min_files,
        grace_s=settings.compact_grace_s if args.grace_s is None else args.grace_s,
        max_rows=args.max_rows or settings.compact_max_rows,
        retention=retention,
    )
    if report is not None:
        erasure.finish(store)  # erasures cut short (kill -9) or waiting for a flush
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.nice(args.nice)
    settings = Settings.from_env()
    logs.configure(settings)
    stop_on_term(args.stop_with_parent)
    worker = f"compact{os.getpid()}x{secrets.token_hex(4)}"
    # the Delta store where the table is shared: an erase's ``finish`` deletes from it
    store = open_store(dataclasses.replace(settings, data_dir=args.data_dir), worker)
    report = run_pass(store, settings, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fields = None if report is None else {**dataclasses.asdict(report), "peak_rss_bytes": peak}
    print(json.dumps(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
