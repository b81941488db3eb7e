"""The numbered notes under the benchmark's table: how each figure was measured."""

from __future__ import annotations

import os

from ops.bench_common import MIN_SAMPLES, QUERY_DAY
from ops.bench_plan import Plan
from ops.bench_queries import BERLIN, YEAR_USER, StoreInfo
from ops.bench_writes import WriteResults


def notes(
    plan: Plan,
    workers: int,
    writes: WriteResults | None,
    store: StoreInfo | None,
    compacted: bool,
) -> list[str]:
    found = [_runs(plan, workers), SERVERS_NOTE, SINGLE_NOTE, _batch(plan)]
    if plan.store != "local":
        found.insert(2, DELTA_NOTE)
    if store is not None:
        found.append(_store(plan, store))
        if compacted:
            found.append(COMPACTED_NOTE)
    if writes is not None:
        found.append(WRITES_NOTE)
        if writes.lag_errors:
            found.append(f"read-after-write probe errors: {writes.lag_errors[:5]}")
    return found


SERVERS_NOTE = (
    "Servers: the service as `ops/serve --bind 127.0.0.1:<free port>` with only "
    "HR_DATA_DIR=<fresh temp dir> set (every other HR_* default: durability fsync); the "
    "ceiling is ops/bench_noop.py (FastAPI, reads the body, answers 202) as "
    "`.venv/bin/gunicorn -c gunicorn.conf.py --bind 127.0.0.1:<port> ops.bench_noop:app`. "
    "Both run at once; each wrk run against the no-op comes right before the one against "
    "the service."
)
DELTA_NOTE = (
    "Delta store (--store delta|delta-s3): the service also has HR_STORE=delta and "
    "HR_TABLE_URI=<a table of each phase's own> (and, on moto_server, AWS_ENDPOINT_URL, "
    "AWS_ALLOW_HTTP=true, dummy keys and region); each flush is one Delta commit. The query "
    "table is loaded through DeltaStore.publish (one commit per user-day, one per year-user "
    "day) and compacted with delta_compaction.compact (min 2 files a partition, and every "
    "day without a rollup), which writes each day's per-minute rollup to <table>/_rollups. "
    "moto_server is a correctness stand-in: its latency is not S3's."
)
SINGLE_NOTE = (
    "Single POST: wrk with ops/bench_post.lua; every request a distinct reading (user, "
    "device_a/device_b, timestamp vary per request; a new user prefix every run); req/s "
    "counts 2xx answers only; latencies are wrk's --latency percentiles."
)
COMPACTED_NOTE = (
    "'before compaction' ran with HR_COMPACT_INTERVAL_S=86400 so that the workers "
    "do not compact in the background during the measurement; the unlabelled "
    "query rows ran after compact_all, with every default."
)
WRITES_NOTE = (
    "Read-after-write: during each single-POST service run a thread POSTs a unique "
    "reading every 100 ms, then GETs it on fresh connections until it shows; lag = from "
    "the 202 to the end of the first GET that returned it (so at least one GET under "
    "load). Peak RSS = VmHWM of each gunicorn worker (children of the master); ceiling "
    "column = no-op worker. Fragment count from manifest.json after a graceful stop."
)


def _runs(plan: Plan, workers: int) -> str:
    return (
        f"{plan.runs} run(s) per figure, median shown, every run listed; wrk runs "
        f"{plan.duration_s} s each with {plan.wrk_threads} wrk thread(s) on the same "
        f"{os.cpu_count()} cores as the {workers} gunicorn workers; 'met' compares with "
        "targets set for 2 workers on 2 cores."
    )


def _batch(plan: Plan) -> str:
    text = (
        f"Batch: wrk with {plan.batch_connections} connections cycling through "
        f"{plan.batch_bodies} pre-generated bodies of {plan.batch_size:,} distinct readings "
        "(fresh bodies every run; one body checked first for accepted == size). wrk was "
        "chosen over a Python thread client: the server, not the client, is the limit, and "
        "wrk uses far less of the 2 shared cores. readings/s = 2xx answers x batch size."
    )
    if not plan.batch_wide_connections:
        return text
    return text + (
        f" The {' and '.join(map(str, plan.batch_wide_connections))}-connection loads do "
        "the same with other fresh bodies, right after, in that order: 4 connections "
        "leave a core idle whenever the kernel hands 3 or 4 of them to one worker, and "
        "each waits for its own fsync; with more connections waiting, a group commit "
        "covers more requests (64 is also the single-POST load's count)."
    )


def _store(plan: Plan, store: StoreInfo) -> str:
    text = (
        f"Query store: {plan.users} users x 2 devices x 1 reading/s x 1 day "
        f"({QUERY_DAY:%Y-%m-%d}), plus {plan.long_days} days for the first "
        f"{plan.long_users} users (only they have a {plan.long_days}-day query); loaded with "
        "Store(data_dir, 'bench', 10.0).publish(), one user-day (172,800 rows) per fragment. "
    )
    if plan.year_days:
        text += (
            f"Plus {YEAR_USER}: {plan.year_days} days up to {QUERY_DAY:%Y-%m-%d} of one "
            f"reading a minute of heart rate, steps (whole numbers) and calories from one "
            f"device ({store.year_rows:,} rows, one fragment per metric and day, loaded in "
            f"{store.year_load_s:.0f} s); its queries (summary, 1h, 1d in {BERLIN}) run "
            "only on the compacted store. "
        )
    return text + (
        f"{store.compaction}. Queries: per run and kind GET /health (the ceiling column, "
        f"same server, right before the kind), then up to {plan.warmups} warm-ups and up "
        f"to {plan.queries} sequential GETs on one keep-alive connection (fewer, but at "
        f"least {MIN_SAMPLES}, once they took {plan.query_budget_s:g} s), cycling through "
        "users; every answer is checked: status 200 and its bucket count (series) or every "
        "metric's minutes, the resting heart rate and the one device (summary). Page cache "
        "warm (data just written)."
    )
