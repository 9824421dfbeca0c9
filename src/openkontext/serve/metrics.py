"""Prometheus text exposition: queue depth and jobs by status from the store, and histograms of
job latency and batch size kept in memory by this process; and `Throughput`, this process's
recent rate of finishing jobs, from which a full queue's Retry-After is estimated."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

from openkontext.serve.store import JobStore, State

BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # cumulative per upper bound
        self.total = 0
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self.counts[i] += 1
            self.total += 1
            self.sum += value

    def lines(self, name: str) -> list[str]:
        with self._lock:
            out = [f'{name}_bucket{{le="{b:g}"}} {n}' for b, n in zip(self.buckets, self.counts,
                                                                     strict=True)]
            out += [f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum:.6f}",
                    f"{name}_count {self.total}"]
        return out


class Throughput:
    """Jobs finished per second of model time over the last `window` batches: a batch of four
    jobs that took 2 s counts as 2 jobs a second, not as four jobs of 2 s each."""

    DEFAULT_SECONDS = 5.0  # a job's time until the first batch has run

    def __init__(self, window: int = 32):
        self._batches: deque[tuple[int, float]] = deque(maxlen=window)  # (jobs, seconds)
        self._lock = threading.Lock()

    def record(self, jobs: int, seconds: float) -> None:
        with self._lock:
            self._batches.append((jobs, seconds))

    def jobs_per_second(self) -> float:
        with self._lock:
            jobs = sum(n for n, _ in self._batches)
            seconds = sum(t for _, t in self._batches)
        return jobs / seconds if jobs and seconds > 0 else 1 / self.DEFAULT_SECONDS

    def retry_after(self, depth: int) -> int:
        """Whole seconds until `depth` jobs ahead are done at the recent rate (1..600)."""
        return max(1, min(600, math.ceil(depth / self.jobs_per_second())))


class Metrics:
    def __init__(self) -> None:
        self.job_seconds = Histogram()
        self.batch_size = Histogram((1, 2, 3, 4, 8, 16))
        self.throughput = Throughput()
        # More exposition lines from the executor (the Ray executor's replicas and jobs in
        # flight), called at each scrape.
        self.sources: list[Callable[[], list[str]]] = []

    def render(self, store: JobStore) -> str:
        counts = store.count_by_state()
        lines = [
            "# HELP openkontext_queue_depth Jobs queued or running.",
            "# TYPE openkontext_queue_depth gauge",
            f"openkontext_queue_depth {counts[State.QUEUED] + counts[State.RUNNING]}",
            "# HELP openkontext_jobs Jobs in the store by state.",
            "# TYPE openkontext_jobs gauge",
            *(f'openkontext_jobs{{state="{s.value}"}} {n}' for s, n in counts.items()),
            "# HELP openkontext_job_duration_seconds Time from start to finish of a job run.",
            "# TYPE openkontext_job_duration_seconds histogram",
            *self.job_seconds.lines("openkontext_job_duration_seconds"),
            "# HELP openkontext_batch_size Jobs run together in one batch through the model.",
            "# TYPE openkontext_batch_size histogram",
            *self.batch_size.lines("openkontext_batch_size"),
        ]
        for source in self.sources:
            lines += source()
        return "\n".join(lines) + "\n"
