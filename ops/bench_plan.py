"""The benchmark's options: ``./ops/bench --help`` and the Plan every phase reads."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from ops.bench_common import DEFAULT_PHASES, PHASES
from ops.bench_table import STORES

TABLE_PHASES = ("writes", "queries")  # the phases that run against a Delta table too


@dataclass(frozen=True, slots=True)
class Plan:
    runs: int
    duration_s: int
    connections: int
    wrk_threads: int
    batch_connections: int
    batch_wide_connections: tuple[int, ...]
    batch_size: int
    batch_bodies: int
    users: int
    long_users: int
    long_days: int
    year_days: int
    queries: int
    warmups: int
    query_budget_s: float
    workers: int | None
    keep: bool
    quick: bool
    phases: frozenset[str] = frozenset(DEFAULT_PHASES)
    store: str = "local"  # --store: where the service's table lives (see bench_table)


def parse_args(argv: Sequence[str]) -> Plan:
    p = _parser()
    a = p.parse_args(argv)
    try:
        wide = tuple(
            int(x) for x in a.batch_wide_connections.split(",") if x.strip() not in ("", "0")
        )
    except ValueError:
        p.error("--batch-wide-connections takes comma-separated connection counts, e.g. 16,64")
    if any(n < 1 for n in wide):
        p.error("--batch-wide-connections: every count must be at least 1")
    plan = _plan(a, wide)
    problem = _problem(plan)
    if problem:
        p.error(problem)
    return plan


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ops/bench",
        description="Benchmark the service on this machine; prints one markdown table.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run, 3 s, 10 users")
    p.add_argument("--runs", type=int, help="runs per figure, the median is shown (3)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (10; --quick 3)")
    p.add_argument("--connections", type=int, default=64, help="single-POST connections")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--batch-connections", type=int, default=4, help="batch connections (4)")
    p.add_argument(
        "--batch-wide-connections",
        default="16,64",
        help="connection counts of further batch loads, larger client pools, comma-separated "
        "(16,64; 0: none)",
    )
    p.add_argument("--batch-size", type=int, default=1000, help="readings per batch")
    p.add_argument("--batch-bodies", type=int, default=16, help="distinct batch bodies")
    p.add_argument("--users", type=int, help="users in the 1-day store (100; --quick 10)")
    p.add_argument("--long-users", type=int, help="users with --long-days days (5; --quick 1)")
    p.add_argument("--long-days", type=int, default=30, help="days of the long users (30)")
    p.add_argument(
        "--year-days",
        type=int,
        help="days of per-minute heart rate, steps and calories of the one year user "
        "(365; --quick 31; 0: no year user)",
    )
    p.add_argument("--queries", type=int, help="measured queries per run (50; --quick 20)")
    p.add_argument("--warmups", type=int, default=5, help="warm-up queries per run (5)")
    p.add_argument(
        "--query-budget",
        type=float,
        help="seconds per query kind and run; slow queries stop early (45; --quick 15)",
    )
    p.add_argument("--workers", type=int, help="gunicorn workers (default: as ops/serve)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs")
    p.add_argument(
        "--store",
        choices=STORES,
        default="local",
        help="the service's store: local (default), delta (a Delta table on a local path) or "
        "delta-s3 (a Delta table on a moto_server S3 endpoint on 127.0.0.1: checks the path "
        "works, not S3's speed); delta stores run the writes and queries phases",
    )
    p.add_argument(
        "--phases",
        help="which phases to run, comma-separated: writes (single and batch POSTs beside "
        "the no-op and bare-ASGI ceilings, lag, RSS), queries (a loaded store, before and "
        "after compaction), fresh (queries of data that just arrived), streams (stream lag, "
        "POSTs beside open streams), auth (POSTs with access control off and on), floor (the "
        "write targets beside the least work any design must do: ops.bench_noop:durable); "
        "default: all but floor (writes,queries with a delta --store)",
    )
    return p


def _plan(a: argparse.Namespace, wide: tuple[int, ...]) -> Plan:
    quick = bool(a.quick)

    def pick(value: int | None, full: int, smoke: int) -> int:
        return value if value is not None else (smoke if quick else full)

    return Plan(
        runs=pick(a.runs, 3, 1),
        duration_s=pick(a.duration, 10, 3),
        connections=a.connections,
        wrk_threads=a.wrk_threads,
        batch_connections=a.batch_connections,
        batch_wide_connections=wide,
        batch_size=a.batch_size,
        batch_bodies=a.batch_bodies,
        users=pick(a.users, 100, 10),
        long_users=pick(a.long_users, 5, 1),
        long_days=a.long_days,
        year_days=pick(a.year_days, 365, 31),
        queries=pick(a.queries, 50, 20),
        warmups=a.warmups,
        query_budget_s=a.query_budget if a.query_budget is not None else (15 if quick else 45),
        workers=a.workers,
        keep=bool(a.keep),
        quick=quick,
        phases=frozenset(x.strip() for x in _phases(a).split(",") if x.strip()),
        store=a.store,
    )


def _phases(a: argparse.Namespace) -> str:
    if a.phases is not None:
        return str(a.phases)
    return ",".join(DEFAULT_PHASES if a.store == "local" else TABLE_PHASES)


def _problem(plan: Plan) -> str | None:
    if not plan.phases or not plan.phases <= set(PHASES):
        return f"--phases takes a comma-separated subset of {', '.join(PHASES)}"
    if plan.store != "local" and not plan.phases <= set(TABLE_PHASES):
        return f"--store {plan.store} runs only the phases {', '.join(TABLE_PHASES)}"
    if plan.runs < 1 or plan.duration_s < 1 or plan.queries < 1 or plan.users < 1:
        return "--runs, --duration, --queries and --users must be at least 1"
    if not 0 <= plan.long_users <= plan.users or plan.long_days < 1:
        return "--long-users must be within --users and --long-days at least 1"
    if plan.year_days < 0:
        return "--year-days must be 0 (no year user) or more"
    if plan.wrk_threads > min(plan.connections, plan.batch_connections):
        return "--wrk-threads may not exceed the connection counts"
    return None
