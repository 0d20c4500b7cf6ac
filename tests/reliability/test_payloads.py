"""Scenario 13: oversized and malformed records on every topic every service consumes, beside
a normal stream. Each consumer dead-letters each bad record once with reasons, processes
everything else, stays up, and its memory does not grow with what it was sent."""

from __future__ import annotations

import json
import time

import pytest

from shared.topics import Topic
from tests.helpers import eventually
from tests.reliability.harness import (
    SERVICES,
    SIZES,
    Expected,
    Item,
    Rig,
    publish,
    submissions,
)

pytestmark = pytest.mark.e2e

# What each service consumes (its app.py); the dead-letter topic is read by reporting only,
# which records what arrives there and never dead-letters a dead letter again.
SUBSCRIPTIONS = {
    "intake": (Topic.SUBMISSIONS, Topic.PROJECTS),  # its own changes, for the duplicate search
    "scoring": (Topic.PROJECTS, Topic.SCORING_COMMANDS),
    "capacity": (Topic.PROJECTS, Topic.SCORES, Topic.RESOURCES, Topic.CAPACITY_COMMANDS),
    "reporting": (
        Topic.PROJECTS,
        Topic.DUPLICATES,
        Topic.SCORES,
        Topic.PLANS,
        Topic.PLAN_SUMMARIES,
        Topic.SCENARIOS,
        Topic.SCORING_AUDIT,
    ),
}
OVERSIZED = 1_200_000  # above every consumer's limit (the largest, internal events, is 1 MiB)


def bad_records(topic: Topic) -> list[Item]:
    tag = topic.value.replace(".", "-")
    bodies = [
        b"{not json",
        b"\xff\xfe\x00 not utf-8",
        json.dumps(["an", "array"]).encode(),
        json.dumps({"portfolio": 42, "revision": "first", "project_key": None}).encode(),
        b'{"pad": "' + b"x" * OVERSIZED + b'"}',
    ]
    return [(f"rp0/bad-{tag}/{i}".encode(), body) for i, body in enumerate(bodies)]


@pytest.mark.timeout(SIZES.timeout)
async def test_malformed_and_oversized_records_at_every_consumer(rig: Rig) -> None:
    sent = submissions(13, max(100, SIZES.events // 3), portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    pipeline = await rig.pipeline()
    await rig.seed_resources(13, SIZES.portfolios)
    started = time.monotonic()
    await publish(rig.bootstrap, rig.topic(Topic.SUBMISSIONS), [(s.key, s.value) for s in sent])
    await rig.ledger.wait_settled(expected, since=started, within=120, pipeline=pipeline)
    baseline = {s: pipeline.one(s).memory_kib() for s in SERVICES}

    topics = {t for ts in SUBSCRIPTIONS.values() for t in ts} | {Topic.DEAD_LETTERS}
    wanted = 0
    for topic in sorted(topics, key=lambda t: t.value):
        records = bad_records(topic)
        await publish(rig.bootstrap, rig.topic(topic), records)
        wanted += len(records) * sum(topic in ts for ts in SUBSCRIPTIONS.values())

    async def all_dead_lettered() -> bool:
        return await rig.ledger.dead_lettered() >= wanted

    await eventually(all_dead_lettered, within=120, what=f"{wanted} dead letters")
    # Reporting also recorded the garbage sent straight to the dead-letter topic, as it is.
    foreign = len(bad_records(Topic.DEAD_LETTERS))

    async def recorded() -> bool:
        rows = await rig.conn.fetchval("SELECT count(*) FROM reporting.dead_letters")
        return bool(rows >= wanted + foreign)

    try:
        await eventually(recorded, within=60, what="every dead letter in reporting's read model")
    except AssertionError:
        seen = await rig.conn.fetch(
            "SELECT coalesce(consumer, '?') AS c, count(*) AS n FROM reporting.dead_letters"
            " GROUP BY 1 ORDER BY 1"
        )
        raise AssertionError(
            f"wanted {wanted} + {foreign}, have {[tuple(r) for r in seen]}"
        ) from None
    rows = await rig.conn.fetch(
        "SELECT consumer, source_topic, reasons FROM reporting.dead_letters"
        " WHERE consumer = ANY($1::text[])",
        list(SERVICES),
    )
    pairs = {(r["consumer"], r["source_topic"]) for r in rows}
    assert pairs == {
        (service, rig.topic(t)) for service, ts in SUBSCRIPTIONS.items() for t in ts
    }, pairs
    assert all(json.loads(r["reasons"]) for r in rows), "every dead letter says why"
    codes = {reason["code"] for r in rows for reason in json.loads(r["reasons"])}
    assert (
        "payload_too_large" in codes or "too_large" in codes or any("large" in c for c in codes)
    ), codes

    growth = {s: (pipeline.one(s).memory_kib() - baseline[s]) // 1024 for s in SERVICES}
    for service in SERVICES:
        process = pipeline.one(service)
        assert process.alive, process.tail()
        await process.ready()
    figures = await rig.ledger.figures(
        "13. malformed and oversized at every consumer",
        expected,
        events=len(sent) + wanted,
        recovery=None,
        peak_rss_growth_mib=growth,
    )
    assert (figures.lost, figures.duplicated) == (0, 0), figures
    assert figures.dead_lettered == wanted, figures
    # Each bad record is at most 1.2 MB and is read, refused and dropped: no service's peak
    # resident memory grows by more than a few such records.
    assert all(g < 64 for g in growth.values()), growth
