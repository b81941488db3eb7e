"""Reproducible benchmark of the heart-rate service; run it through ``./ops/bench``.

Prints the machine, the exact command and ONE markdown table (each figure the median of
``--runs`` runs, with a same-run ceiling beside it where one applies) and writes the same
text to ``ops/results/bench-<UTC timestamp>.md``. Phases:

1. single-reading POSTs with wrk (64 connections, every request a distinct reading,
   durability ``fsync``), against the service started as ``ops/serve`` does and against
   the two ceilings of ``ops/bench_noop.py`` (a FastAPI route that only reads the body,
   and a bare ASGI app that does the same) under the same gunicorn config; meanwhile a
   thread measures read-after-write lag on fresh connections;
2. batch POSTs of 1,000 readings with wrk (pre-generated distinct bodies), same three
   servers;
3. queries over HTTP against a store loaded through ``service.storage.store``
   (100 users x 2 devices x 1 Hz x 1 day, plus 30 days for a few users, plus one user
   with a year of per-minute heart rate, steps and calories), before and after
   ``service.storage.compaction.compact_all`` when that exists: per-minute series of 1
   and 30 days (both times), and after compaction also the year user's /summary over 30
   days and 1 day, 1-day series at 1h and year-long series at 1d in Europe/Berlin;
4. queries of fresh data: a 1-day query right after a 172,800-reading batch load and
   again under single-POST load, a 30-day query whose last 15 days just arrived
   (``ops/bench_fresh.py``);
5. event-stream lag with 200 open streams under the single-POST load, and the single-POST
   rate with and without them (``ops/bench_stream.py``);
6. single POSTs with access control off and on, a key sent to both (``ops/bench_auth.py``);
7. only with ``--phases floor``: the write targets beside the floor of the write path, an
   app doing only the parsing, checks and durable write no design can skip
   (``ops/bench_floor.py``).

``--store delta`` (a table on a local path) or ``delta-s3`` (on a moto_server S3 endpoint)
runs phases 1-3 against ``HR_STORE=delta``, each phase with a table of its own, compacted
with ``service.storage.delta_compaction`` (``ops/bench_table.py``).

Every load is bounded in time and goes to 127.0.0.1 only; servers are stopped with SIGTERM.

Modules: bench_plan (options), bench_servers (the servers), bench_wrk (wrk runs and
batch bodies), bench_writes (phases 1-2), bench_queries (phase 3), bench_fresh (phase 4),
bench_stream (phase 5), bench_auth (phase 6), bench_floor (phase 7), bench_table
(--store), bench_machine and bench_report/bench_notes (the output); ops/server.py starts
and stops gunicorn.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ops.bench_auth import measure_auth
from ops.bench_common import fragment_count, log
from ops.bench_floor import measure_floor
from ops.bench_fresh import measure_fresh
from ops.bench_machine import CpuWatch, machine_lines
from ops.bench_plan import Plan, parse_args
from ops.bench_queries import (
    QUERY_TABLE,
    QueryResults,
    StoreInfo,
    build_query_store,
    compact_store,
    compact_table,
    has_compact_all,
    measure_queries,
    query_kinds,
)
from ops.bench_report import report
from ops.bench_servers import SERVERS, noop_server, running, service_server, worker_count
from ops.bench_stream import STREAMS, measure_streams
from ops.bench_table import Table, table
from ops.bench_writes import WriteResults, measure_writes
from ops.server import ROOT


@dataclass(slots=True)
class Outcome:
    """What the phases measured, and what failed on the way."""

    writes: WriteResults | None = None
    store: StoreInfo | None = None
    before: QueryResults | None = None
    after: QueryResults | None = None
    noise: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    fresh: str = ""  # the fresh-data phase's own table
    streams: str = ""  # the stream phase's own table
    auth: str = ""  # the access-control phase's own table
    floor: str = ""  # the floor phase's own table


def main(argv: Sequence[str]) -> int:
    plan = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH: run ./ops/bench (it installs wrk as root)", file=sys.stderr)
        return 2
    command = os.environ.get("BENCH_COMMAND") or shlex.join(["python", "-m", "ops.bench", *argv])
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="hr-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    header = ["## Benchmark", "", *machine_lines(tmp), f"- command: `{command}`"]
    out = Outcome()
    try:
        with table(plan.store, tmp, logs) as store:
            header += [f"- store: {store.describe()}", ""]
            print("\n".join(header), flush=True)
            if "writes" in plan.phases:
                write_phase(plan, tmp, logs, out, store)
            if "queries" in plan.phases:
                query_phase(plan, tmp, logs, out, store)
        if "fresh" in plan.phases:
            fresh_phase(plan, logs, out)
        if "streams" in plan.phases:
            stream_phase(plan, tmp, logs, out)
        if "auth" in plan.phases:
            auth_phase(plan, tmp, logs, out)
        if "floor" in plan.phases:
            floor_phase(plan, tmp, logs, out)
    finally:
        if not plan.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    result = report(
        plan,
        worker_count(plan),
        out.writes,
        out.store,
        out.before,
        out.after,
        out.noise,
        out.failures,
    )
    body = result.render() + "".join(
        f"\n\n{t}" for t in (out.fresh, out.streams, out.auth, out.floor) if t
    )
    body += f"\n\nTotal time: {(time.monotonic() - started) / 60:.1f} min.\n"
    print(body, flush=True)
    save("\n".join(header) + "\n" + body)
    return 1 if out.failures else 0


def write_phase(plan: Plan, tmp: Path, logs: Path, out: Outcome, store: Table) -> None:
    """Phases 1 and 2: writes against a fresh data dir (and table), next to the no-op
    ceiling."""
    write_dir = tmp / "write-data"
    try:
        env = store.server_env("writes")
        service = service_server("service-write", write_dir, plan, logs, env)
        noop = noop_server(plan, logs)
        raw = noop_server(plan, logs, "raw")
        watch = CpuWatch(SERVERS)
        with running(raw, noop, service):
            out.writes = measure_writes(service, noop, raw, write_dir, plan)
        out.noise["write phase"] = watch.share()
        # a Delta table's files are not in the manifest
        out.writes.fragments_end = None if store.delta else fragment_count(write_dir)
        out.writes.wal_left = sum(1 for p in (write_dir / "wal").glob("*.log"))
    except Exception as exc:
        out.failures.append(f"write phase: {exc}")
        log(f"write phase failed: {exc}")


def query_phase(plan: Plan, tmp: Path, logs: Path, out: Outcome, store: Table) -> None:
    """Phase 3: queries against a store loaded through the storage layer, before and after
    compaction when the service has ``compact_all`` (a Delta table: ``delta_compaction``)."""
    query_dir = tmp / "query-data"
    env = store.server_env(QUERY_TABLE)
    try:
        watch = CpuWatch(SERVERS)
        log(f"loading the query store into {query_dir}")
        out.store, loaded = build_query_store(query_dir, plan, store)
        has_compaction = store.delta or has_compact_all()
        if has_compaction:
            quiet = {**env, "HR_COMPACT_INTERVAL_S": "86400"}
            server = service_server("service-query-before", query_dir, plan, logs, quiet)
            with running(server):
                log("queries before compaction")
                # the year user's 1,000-odd raw fragments: its queries only after compaction
                out.before = measure_queries(server, plan, query_kinds(plan, year=False))
        if store.delta:
            compact_table(store, out.store)
        if store.delta or compact_store(query_dir, loaded, out.store) or not has_compaction:
            server = service_server("service-query", query_dir, plan, logs, env)
            with running(server):
                log("queries" + (" after compaction" if has_compaction else ""))
                out.after = measure_queries(server, plan, query_kinds(plan))
        out.noise["query phase"] = watch.share()
    except Exception as exc:
        out.failures.append(f"query phase: {exc}")
        log(f"query phase failed: {exc}")


def fresh_phase(plan: Plan, logs: Path, out: Outcome) -> None:
    """Phase 4: queries of readings that arrived a moment ago (``ops/bench_fresh.py``)."""
    try:
        out.fresh = measure_fresh(plan, logs)
    except Exception as exc:
        out.failures.append(f"fresh-data phase: {exc}")
        log(f"fresh-data phase failed: {exc}")


def stream_phase(plan: Plan, tmp: Path, logs: Path, out: Outcome) -> None:
    """Phase 5: stream lag and ingestion beside open streams (``ops/bench_stream.py``)."""
    try:
        server = service_server("service-stream", tmp / "stream-data", plan, logs)
        with running(server):
            results = measure_streams(server, STREAMS, plan.duration_s, plan.runs)
        out.streams = results.render()
    except Exception as exc:
        out.failures.append(f"stream phase: {exc}")
        log(f"stream phase failed: {exc}")


def auth_phase(plan: Plan, tmp: Path, logs: Path, out: Outcome) -> None:
    """Phase 6: what access control costs single POSTs (``ops/bench_auth.py``)."""
    try:
        out.auth = measure_auth(plan, tmp, logs).render()
    except Exception as exc:
        out.failures.append(f"access-control phase: {exc}")
        log(f"access-control phase failed: {exc}")


def floor_phase(plan: Plan, tmp: Path, logs: Path, out: Outcome) -> None:
    """Phase 7: the write targets beside the floor of the write path (``ops/bench_floor.py``)."""
    try:
        out.floor = measure_floor(plan, tmp, logs)
    except Exception as exc:
        out.failures.append(f"floor phase: {exc}")
        log(f"floor phase failed: {exc}")


def save(text: str) -> None:
    results = ROOT / "ops" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    path.write_text(text)
    log(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
