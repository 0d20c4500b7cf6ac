"""The collector's time as a metric: counted without taking any lock, read when scraped."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY, generate_latest

from shared.metrics import GC_TIME, CollectionTime


def test_collections_are_timed_by_generation_and_exported_when_scraped() -> None:
    timer = CollectionTime()
    gc.callbacks.append(timer)
    try:
        garbage = []
        for _ in range(20_000):
            cycle: list[object] = []
            cycle.append(cycle)
            garbage.append(cycle)
        del garbage, cycle
        gc.collect(0)
        gc.collect(2)
    finally:
        gc.callbacks.remove(timer)
    assert timer.seconds[0] > 0
    assert timer.seconds[2] > 0
    [family] = timer.collect()
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("pmo_gc_collection_seconds_total", {"generation": str(g)}, timer.seconds[g])
        for g in range(3)
    ]


def test_the_process_wide_timer_is_what_metrics_expose() -> None:
    # A service appends it to gc.callbacks when it starts serving (shared/runtime.py
    # freeze_heap); here its sums are set by hand and read back through the registry.
    before = list(GC_TIME.seconds)
    GC_TIME.seconds[:] = [0.25, 1.5, 4.0]
    try:
        exposed = generate_latest(REGISTRY).decode()
    finally:
        GC_TIME.seconds[:] = before
    for generation, value in enumerate(("0.25", "1.5", "4.0")):
        assert f'pmo_gc_collection_seconds_total{{generation="{generation}"}} {value}' in exposed
