"""What a worker's background work is failing at: counted, backed off, and read by /ready.

Each task (flush, recovery, compaction, the group commit, the flush loop itself) reports
every failure and every success; a task whose last attempt failed is a reason the worker
is not ready, and retries after a delay that doubles with each consecutive failure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from service import metrics

log = logging.getLogger("service.ingest")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# ingestion refused a request for want of buffer room this recently: not ready
OVERLOAD_MEMORY_S = 5.0


@dataclass(slots=True)
class TaskHealth:
    failures: dict[str, int] = field(default_factory=dict)  # consecutive, per task
    errors: dict[str, str] = field(default_factory=dict)  # the last error, per task
    ended: str | None = None  # a task that stopped for good: the worker must be replaced
    overloaded_at: float = float("-inf")  # monotonic time of the last buffer-full refusal

    def failed(self, task: str, exc: BaseException) -> float:
        """Count a failure of ``task``; the seconds to wait before it tries again."""
        count = self.failures[task] = self.failures.get(task, 0) + 1
        self.errors[task] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        metrics.TASK_FAILURES.labels(task).inc()
        log.error(
            "%s failed (%d in a row), will retry: %s",
            task,
            count,
            self.errors[task],
            exc_info=exc,
            extra={"fields": {"event": "task_failure", "task": task, "failures": count}},
        )
        return min(RETRY_MAX_S, RETRY_FIRST_S * float(1 << min(count - 1, 16)))

    def succeeded(self, task: str) -> None:
        if task in self.failures:
            del self.failures[task]
            self.errors.pop(task, None)
            log.info("%s works again", task)

    def overloaded(self) -> None:
        self.overloaded_at = time.monotonic()

    def problems(self) -> list[str]:
        """Why the worker is not ready; empty when nothing is failing."""
        found = [] if self.ended is None else [self.ended]
        found += [
            f"{task} failing ({count} in a row): {self.errors.get(task, '')}"
            for task, count in sorted(self.failures.items())
        ]
        if time.monotonic() - self.overloaded_at < OVERLOAD_MEMORY_S:
            found.append("buffers are full: ingestion answers 503 until a flush makes room")
        return found
