"""Prometheus metrics common to every service (each service process has its own registry)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

RECORDS = Counter("pmo_records_consumed_total", "Records consumed", ["service", "topic"])
BATCHES = Histogram(
    "pmo_batch_seconds",
    "Time to process and commit one consumed batch, by the service's consumer",
    ["service", "consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DUPLICATES = Counter(
    "pmo_duplicates_skipped_total", "Redelivered events recognised by the inbox", ["service"]
)
DEAD_LETTERS = Counter(
    "pmo_dead_letters_total", "Records dead-lettered, by reason code", ["service", "code"]
)
RETRIES = Counter("pmo_transient_retries_total", "Transient failures retried", ["service"])
REWINDS = Counter(
    "pmo_batches_rewound_total", "Batches handed back to Kafka after retries ran out", ["service"]
)
OFFSET_COMMITS = Counter(
    "pmo_offset_commits_total", "Offset commits sent to the group coordinator", ["service"]
)
OUTBOX_BACKLOG = Gauge("pmo_outbox_backlog", "Unsent outbox rows", ["service"])
OUTBOX_OLDEST = Gauge(
    "pmo_outbox_oldest_unsent_seconds", "Age of the oldest unsent outbox row", ["service"]
)
PROCESS_NICE = Gauge("pmo_process_nice", "The process's nice value (its CPU priority)", ["service"])
GC_FROZEN = Gauge(
    "pmo_gc_frozen_objects",
    "Objects built before serving, moved out of the garbage collector's reach (gc.freeze)",
)
GC_THRESHOLD = Gauge(
    "pmo_gc_threshold",
    "The cyclic garbage collector's threshold of each generation (gc.get_threshold)",
    ["generation"],
)
OUTBOX_PUBLISHED = Counter("pmo_outbox_published_total", "Outbox rows published", ["service"])
REPLANS = Histogram(
    "pmo_replan_seconds",
    "Time to replan one portfolio (read, plan, compare, write)",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REPLAN_WAIT = Histogram(
    "pmo_replan_wait_seconds",
    "Time a portfolio waited between the first change asking for a replan and the replan",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REPLAN_FAILURES = Counter(
    "pmo_replan_failures_total", "Replans that failed with an unexpected error", ["service"]
)
HISTORY_PURGED = Counter(
    "pmo_history_purged_total",
    "History rows deleted by the retention's sweeps, by table",
    ["table"],
)
HISTORY_SWEEP_FAILURES = Counter(
    "pmo_history_sweep_failures_total",
    "Sweeps of the history's retention, or parts of one, that failed with an unexpected error",
)
CONSUMER_LAG = Gauge(
    "pmo_consumer_lag",
    "Records behind the end of each assigned partition, after the last committed batch",
    ["service", "topic", "partition"],
)


class CollectionTime:
    """A ``gc.callbacks`` entry that sums the CPU time of the cyclic garbage collector's
    collections by generation (the collecting thread's), exported as
    ``pmo_gc_collection_seconds_total`` when scraped.

    A collection can start at any allocation, including one made while prometheus_client holds
    a metric's (non-reentrant) lock in the same thread, such as the copy of its children made
    while it is scraped; a callback that updated a metric could then wait for that lock forever.
    So the callback only adds to plain floats, and the registry reads them when it collects."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds[info["generation"]] += time.thread_time() - self._started

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "pmo_gc_collection_seconds",
            "CPU time spent in the cyclic garbage collector's collections, by generation",
            labels=["generation"],
        )
        for generation, seconds in enumerate(self.seconds):
            family.add_metric([str(generation)], seconds)
        yield family


GC_TIME = CollectionTime()
REGISTRY.register(GC_TIME)
