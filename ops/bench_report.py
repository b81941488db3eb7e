"""The benchmark's one markdown table: a row per figure (median of the runs), the same-run
ceiling beside it, the target and whether it was met."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ops.bench_common import BATCH_TARGETS, DAY_HISTORY_MS, TARGETS, median
from ops.bench_notes import notes
from ops.bench_plan import Plan
from ops.bench_queries import QueryResults, StoreInfo
from ops.bench_writes import WriteResults


def fmt_int(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.1f} ms" if x >= 10 else f"{x:.2f} ms"


def fmt_mb(x: float) -> str:
    return f"{x:,.0f} MB"


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value != value:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "yes" if ok else "**no**"


@dataclass(slots=True)
class Table:
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        what: str,
        values: Sequence[float],
        fmt: Callable[[float], str],
        ceiling: Sequence[float] = (),
        target: tuple[str, float, bool] | None = None,
        raw: Sequence[float] = (),
        share: float | None = None,
    ) -> None:
        """A row; ``raw`` is the bare-ASGI ceiling beside the no-op one (``ceiling``): a
        throughput row prints the result as a share of each; with ``share`` the target is
        that share of the raw ceiling, not ``target``'s figure."""
        value = median(values)
        ceil = fmt(median(ceiling)) if ceiling else ""
        if raw:
            ceil = f"no-op {ceil} ({value / median(ceiling):.0%}); " if ceiling else ""
            ceil += f"raw ASGI {fmt(median(raw))} ({value / median(raw):.0%})"
        goal, met = "", ""
        if target is not None:
            goal = target[0]
            met = verdict(value, target[1], target[2])
        if share is not None and raw:
            met = verdict(value / median(raw), share, True)
        runs = ", ".join(fmt(v) for v in values) if len(values) > 1 else ""
        self.rows.append([what, fmt(value), ceil, goal, met, runs])

    def text(self, result: str, extra: str = "", ceiling: str = "", runs: str = "") -> None:
        self.rows.append([result, extra, ceiling, "", "", runs])

    def render(self) -> str:
        head = ["measure", "result (median)", "ceiling (same run)", "target", "met", "runs"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"{n + 1}. {note}" for n, note in enumerate(self.notes)]
        return "\n".join(lines)


def report(
    plan: Plan,
    workers: int,
    writes: WriteResults | None,
    store: StoreInfo | None,
    before: QueryResults | None,
    after: QueryResults | None,
    noise: dict[str, float],
    failures: list[str],
) -> Table:
    t = Table()
    if writes is not None:
        _single_rows(t, plan, writes)
        _batch_rows(t, plan, writes)
        _error_row(t, writes)
    query_counts = _query_rows(t, before, after)
    if writes is not None and writes.lag_ms:
        _lag_rows(t, writes)
    _rss_rows(t, writes, before, after)
    _count_rows(t, writes, store)
    if noise:
        t.text(
            "CPU used by other processes meanwhile (noise)",
            ", ".join(f"{phase} {share:.0%}" for phase, share in noise.items()),
            runs="share of all cores; figures above are only comparable when this is ~0%",
        )
    t.notes += notes(plan, workers, writes, store, after is not None and before is not None)
    if query_counts:
        t.notes.append("Measured queries per run: " + "; ".join(query_counts) + ".")
    t.notes += [f"FAILED: {f}" for f in failures]
    return t


def _single_rows(t: Table, plan: Plan, writes: WriteResults) -> None:
    s, n, r = writes.single, writes.single_noop, writes.single_raw
    if not s:
        return
    t.add(
        f"single POST, fsync, {plan.connections} conns: req/s",
        [x.ok_per_s for x in s],
        fmt_int,
        [x.ok_per_s for x in n],
        (f"≥ {TARGETS['single_raw_share']:.0%} of raw ASGI", 0.0, True),
        raw=[x.ok_per_s for x in r],
        share=TARGETS["single_raw_share"],
    )
    t.add("single POST p50", [x.p50_ms for x in s], fmt_ms, [x.p50_ms for x in n])
    t.add(
        "single POST p99",
        [x.p99_ms for x in s],
        fmt_ms,
        [x.p99_ms for x in n],
        ("≤ 20 ms", TARGETS["single_p99"], False),
    )


def _batch_rows(t: Table, plan: Plan, writes: WriteResults) -> None:
    loads = [
        (writes.batch, writes.batch_noop, writes.batch_raw, plan.batch_connections),
        *(
            (
                writes.batch_wide.get(wide, []),
                writes.batch_wide_noop.get(wide, []),
                writes.batch_wide_raw.get(wide, []),
                wide,
            )
            for wide in plan.batch_wide_connections
        ),
    ]
    size = plan.batch_size
    for b, n, raw, conns in loads:
        if not b:
            continue
        goal = BATCH_TARGETS.get(conns)
        t.add(
            f"batch POST ({size:,}/request, {conns} conns): readings/s",
            [r.ok_per_s * size for r in b],
            fmt_int,
            [r.ok_per_s * size for r in n],
            None if goal is None else (f"≥ {fmt_int(goal)}", goal, True),
            raw=[r.ok_per_s * size for r in raw],
        )
        for name, pick in (("p50", lambda r: r.p50_ms), ("p99", lambda r: r.p99_ms)):
            label = f"batch POST {name} (per request, {conns} conns)"
            target = ("≤ 50 ms", TARGETS["batch_p99"], False) if name == "p99" else None
            t.add(label, [pick(r) for r in b], fmt_ms, [pick(r) for r in n], target)


def _error_row(t: Table, writes: WriteResults) -> None:
    ours = writes.single + writes.batch + [r for rs in writes.batch_wide.values() for r in rs]
    noops = [
        *writes.single_noop,
        *writes.single_raw,
        *writes.batch_noop,
        *writes.batch_raw,
        *(r for rs in writes.batch_wide_noop.values() for r in rs),
        *(r for rs in writes.batch_wide_raw.values() for r in rs),
    ]
    bad = sum(r.non2xx for r in ours)
    sock = sum(r.socket_errors for r in ours)
    noop_bad = sum(r.non2xx + r.socket_errors for r in noops)
    t.text("write errors: non-2xx / socket errors", f"{bad:,} / {sock:,}", f"{noop_bad:,}")


def _goal(key: str) -> str:
    text = f"≤ {TARGETS[key]:g} ms"
    return text + f" (last sitting {DAY_HISTORY_MS:g} ms)" if key == "day_p50" else text


def _query_rows(t: Table, before: QueryResults | None, after: QueryResults | None) -> list[str]:
    """The query latency rows, each beside the /health measured right before it; returns
    how many queries each run measured, per server."""
    query_counts: list[str] = []
    for label, res in (("before compaction", before), ("", after)):
        if res is None:
            continue
        suffix = f" ({label})" if label else ""
        counts = []
        for m in res.kinds.values():
            if not m.timing.p50:
                continue
            key = m.kind.target
            target = None if label or key is None else (_goal(key), TARGETS[key], False)
            name = m.kind.label
            t.add(f"{name} p50{suffix}", m.timing.p50, fmt_ms, m.health.p50, target)
            t.add(f"{name} p95{suffix}", m.timing.p95, fmt_ms, m.health.p95)
            counts.append(f"{name} {'/'.join(map(str, m.timing.counts))}")
        query_counts.append(
            f"{label or ('after compaction' if before else 'all')}: {', '.join(counts)}"
        )
    return query_counts


def _lag_rows(t: Table, writes: WriteResults) -> None:
    lags = writes.lag_ms
    first = sum(1 for p in writes.lag_polls if p == 1)
    t.add("read-after-write lag p50 (under single-POST load)", [median(lags)], fmt_ms)
    t.add("read-after-write lag max", [max(lags)], fmt_ms)
    t.text(
        "read-after-write: first GET already saw it",
        f"{first}/{len(lags)} probes ({writes.lag_cross} read on the other worker)",
    )


def _rss_rows(
    t: Table, writes: WriteResults | None, before: QueryResults | None, after: QueryResults | None
) -> None:
    rss_target = ("≤ 300 MB", TARGETS["rss"], False)
    noop_rss = [max(writes.rss_noop_mb)] if writes is not None and writes.rss_noop_mb else []

    def rss(label: str, values: list[float]) -> None:
        if values:
            t.add(label, [max(values)], fmt_mb, noop_rss, rss_target)
            t.rows[-1][5] = ", ".join(fmt_mb(v) for v in values) + " (each worker)"

    if writes is not None:
        rss("peak RSS per worker after single POSTs", writes.rss_single_mb)
        rss("peak RSS per worker after batch POSTs", writes.rss_batch_mb)
    for label, res in (("before compaction", before), ("after compaction", after)):
        if res is not None and res.rss_mb:
            rss(f"peak RSS per worker, query server ({label})", res.rss_mb)


def _count_rows(t: Table, writes: WriteResults | None, store: StoreInfo | None) -> None:
    if writes is not None and writes.fragments_end is not None:
        t.text(
            "fragments in manifest at end of write phase",
            f"{writes.fragments_end:,}",
            runs=f"WAL segments left after SIGTERM: {writes.wal_left}",
        )
    if store is not None:
        after_text = "n/a" if store.fragments_after is None else f"{store.fragments_after:,}"
        t.text(
            f"{store.files}: loaded → after compaction",
            f"{store.fragments_loaded:,} → {after_text}",
            runs=f"{store.rows:,} rows loaded in {store.load_s:.0f} s"
            + (f"; compaction took {store.compact_s:.0f} s" if store.compact_s else ""),
        )
