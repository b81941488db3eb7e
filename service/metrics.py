"""Prometheus metric objects (names, labels, buckets), and a per-turn tally for the hot path.

Under gunicorn every worker writes its own files in ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` merges them; gauges use ``livesum`` so dead workers drop out.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram

from service.deferral import at_end_of_turn

_Metric = TypeVar("_Metric", Counter, Histogram)


class TurnTally:
    """Per-request counts and observations, added to the shared values at the end of
    the event-loop turn they were made in.

    In multiprocess mode each ``inc`` takes a lock, checks the pid and writes the
    worker's mmap file, and an observation is two of them; that was a sixth of a
    single-reading request's CPU. Requests finishing in the same turn now share one
    write per touched value. The values are written before the loop waits for more
    I/O, so a scrape never misses a request that was answered before it arrived.
    Use it from the event loop's thread; where no loop runs (tools, tests) values are
    written at once.
    """

    def __init__(self) -> None:
        self._counts: dict[Counter, float] = {}
        self._observed: dict[Histogram, list[float]] = {}
        self._children: dict[tuple[object, ...], Counter | Histogram] = {}
        self._scheduled = False

    def inc(self, counter: Counter, amount: float = 1.0) -> None:
        self._counts[counter] = self._counts.get(counter, 0.0) + amount
        self._schedule()

    def observe(self, histogram: Histogram, value: float) -> None:
        if (values := self._observed.get(histogram)) is None:
            self._observed[histogram] = [value]
        else:
            values.append(value)
        self._schedule()

    def child(self, metric: _Metric, *labels: str) -> _Metric:
        """``metric.labels(*labels)``, looked up once."""
        found = self._children.get((metric, *labels))
        if found is None:
            found = self._children[(metric, *labels)] = metric.labels(*labels)
        return cast("_Metric", found)

    def _schedule(self) -> None:
        if self._scheduled:
            return
        if at_end_of_turn(self.flush):
            self._scheduled = True
        else:  # no loop in this thread
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, values in observed.items():
            observe_many(histogram, values)


def observe_many(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe(v)`` for each value, one write per touched bucket."""
    bounds = histogram._upper_bounds  # ends with +Inf: every value has a bucket
    per_bucket: dict[int, int] = {}
    for value in values:
        index = bisect_left(bounds, value)  # the first bound >= value, as observe() picks
        per_bucket[index] = per_bucket.get(index, 0) + 1
    histogram._sum.inc(sum(values))
    for index, count in per_bucket.items():
        histogram._buckets[index].inc(count)


tally = TurnTally()

# sub-millisecond to seconds: fsyncs and small queries sit at the bottom, flushes and
# long-range queries at the top
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

READINGS_ACCEPTED = Counter(
    "hr_readings_accepted_total",
    "Readings acknowledged (durable per the durability mode).",
    ["endpoint"],
)
READINGS_REJECTED = Counter(
    "hr_readings_rejected_total",
    "Readings rejected by validation, by their first bad field and its reason.",
    ["endpoint", "field", "reason"],
)
REQUEST_SECONDS = Histogram(
    "hr_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
WAL_FSYNC_SECONDS = Histogram(
    "hr_wal_fsync_duration_seconds",
    "Latency of one WAL write plus fsync (a group commit).",
    buckets=LATENCY_BUCKETS,
)
WAL_GROUP_READINGS = Histogram(
    "hr_wal_group_commit_readings",
    "Readings made durable by one group commit.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000, 2500, 10_000, 50_000),
)
FLUSH_SECONDS = Histogram(
    "hr_flush_duration_seconds",
    "Buffer flushes: fragment write plus manifest commit.",
    buckets=LATENCY_BUCKETS,
)
FLUSH_ROWS = Counter("hr_flush_rows_total", "Rows written to fragments by flushes.")
FLUSH_FAILURES = Counter("hr_flush_failures_total", "Flushes that failed and will be retried.")
TASK_FAILURES = Counter(
    "hr_task_failures_total",
    "Failures of a worker's background tasks (flush, recovery, compaction, group commit,"
    " the flush loop), each retried.",
    ["task"],
)
RECOVERED_ROWS = Counter("hr_recovered_rows_total", "Rows replayed from dead workers' WALs.")
BUFFER_ROWS = Gauge(
    "hr_buffer_rows", "Rows in worker buffers not yet in a fragment.", multiprocess_mode="livesum"
)
QUERY_SECONDS = Histogram(
    "hr_query_duration_seconds",
    "Per-minute query latency (plan and collect).",
    buckets=LATENCY_BUCKETS,
)
QUERY_FRAGMENTS = Histogram(
    "hr_query_fragments",
    "Fragments scanned by one query.",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000),
)
COMPACTION_FILES = Counter(
    "hr_compaction_files_total", "Files read (in) and written (out) by compaction.", ["direction"]
)
COMPACTION_SECONDS = Histogram(
    "hr_compaction_duration_seconds",
    "Compaction passes that merged something.",
    buckets=LATENCY_BUCKETS,
)
QUARANTINED_FILES = Counter(
    "hr_quarantined_files_total",
    "Unreadable data files (and their companions) moved to the quarantine directory and"
    " dropped from the manifest, by queries and compaction.",
)
ORPHAN_FILES_REMOVED = Counter(
    "hr_orphan_files_removed_total",
    "Unlisted files a killed writer left in the fragment directory, deleted by compaction.",
)
COMPACTION_DUPLICATES = Counter(
    "hr_compaction_duplicates_total",
    "Rows dropped by compaction as exact duplicates (same identity, same value).",
)
COMPACTION_REPLACED = Counter(
    "hr_compaction_replaced_total",
    "Rows dropped by compaction because a later write of the same identity changed the value.",
)
READ_AFTER_WRITE_LAG_SECONDS = Histogram(
    "hr_read_after_write_lag_seconds",
    "From a write request's readings being validated until every worker's queries can read"
    " them (the WAL write; with durability none, the flush).",
    buckets=LATENCY_BUCKETS,
)
COMPACTION_PEAK_RSS_BYTES = Gauge(
    "hr_compaction_peak_rss_bytes",
    "Peak resident memory of the last compaction pass's process (compaction runs in a"
    " child process, so workers' memory does not carry it).",
    multiprocess_mode="max",
)
WAL_APPENDS = Counter("hr_wal_appends_total", "Group-commit writes to the WAL.")
WAL_BYTES = Counter("hr_wal_bytes_total", "Bytes written to the WAL.")
MANIFEST_FRAGMENTS = Gauge(
    "hr_manifest_fragments",
    "Fragments listed in the manifest.",
    ["level"],
    multiprocess_mode="max",
)
OLDEST_UNFLUSHED_SECONDS = Gauge(
    "hr_oldest_unflushed_seconds",
    "Age of the oldest reading not yet in a fragment.",
    multiprocess_mode="max",
)
DISK_FREE_BYTES = Gauge(
    "hr_data_dir_free_bytes",
    "Free bytes on the data directory's filesystem.",
    multiprocess_mode="min",
)
QUERY_ROWS = Histogram(
    "hr_query_rows_considered",
    "Rows in the fragments and buffers one query had to consider.",
    buckets=(0, 100, 1000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000),
)
STREAMS_OPEN = Gauge(
    "hr_streams_open", "Open event streams (GET .../stream).", multiprocess_mode="livesum"
)
STREAM_EVENTS = Counter("hr_stream_events_total", "Bucket events sent on event streams.")
STREAM_LAG_SECONDS = Histogram(
    "hr_stream_lag_seconds",
    "From a reading's sequence stamp (taken as its group commit starts, just before the"
    " 202) to the event carrying its bucket leaving the worker that holds the stream.",
    buckets=LATENCY_BUCKETS,
)
