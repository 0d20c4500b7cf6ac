"""Prometheus metrics common to every service (each service process has its own registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("pmo_records_consumed_total", "Records consumed", ["service", "topic"])
BATCHES = Histogram(
    "pmo_batch_seconds",
    "Time to process and commit one consumed batch",
    ["service"],
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
OUTBOX_BACKLOG = Gauge("pmo_outbox_backlog", "Unsent outbox rows", ["service"])
OUTBOX_OLDEST = Gauge(
    "pmo_outbox_oldest_unsent_seconds", "Age of the oldest unsent outbox row", ["service"]
)
GC_FROZEN = Gauge(
    "pmo_gc_frozen_objects",
    "Objects built before serving, moved out of the garbage collector's reach (gc.freeze)",
)
GC_THRESHOLD = Gauge(
    "pmo_gc_threshold",
    "The cyclic garbage collector's threshold of each generation (gc.get_threshold)",
    ["generation"],
)
GC_SECONDS = Counter(
    "pmo_gc_collection_seconds_total",
    "CPU time spent in the cyclic garbage collector's collections, by generation",
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
CONSUMER_LAG = Gauge(
    "pmo_consumer_lag",
    "Records behind the end of each assigned partition, after the last committed batch",
    ["service", "topic", "partition"],
)
