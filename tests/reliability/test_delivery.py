"""What the transport may do to records: deliver each of them three times (scenario 6), carry
poison among them (scenario 7), and bring a project's revisions out of order (scenario 8)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from shared.topics import Topic
from tests.helpers import committed, eventually
from tests.reliability.harness import (
    SERVICES,
    SIZES,
    Expected,
    Feed,
    Item,
    Rig,
    publish,
    read_topic,
    submissions,
)

pytestmark = pytest.mark.e2e

# Who consumes each internal topic (each service's app.py subscribes to these).
CONSUMERS = {
    Topic.PROJECTS: ("scoring", "capacity", "reporting", "intake"),  # intake: duplicate search
    Topic.DUPLICATES: ("reporting",),
    Topic.SCORES: ("capacity", "reporting"),
    Topic.PLANS: ("reporting",),
    Topic.PLAN_SUMMARIES: ("reporting",),
    Topic.RESOURCES: ("capacity",),
}
PRODUCERS = {
    Topic.PROJECTS: "intake",
    Topic.DUPLICATES: "intake",
    Topic.SCORES: "scoring",
    Topic.PLANS: "capacity",
    Topic.PLAN_SUMMARIES: "capacity",
}


async def outbox_rows(rig: Rig) -> dict[str, int]:
    return {s: int(await rig.conn.fetchval(f"SELECT count(*) FROM {s}.outbox")) for s in SERVICES}


async def skipped(rig: Rig, pipeline: Any) -> int:
    total = 0.0
    for service in SERVICES:
        total += await pipeline.one(service).metric("pmo_duplicates_skipped_total")
    return int(total)


def same_partition(records: list[ConsumerRecord[bytes, bytes]]) -> Any:
    """A partitioner that sends each key where its records already are."""
    where = {r.key: r.partition for r in records}

    def partitioner(key: bytes | None, *_: Any) -> int:
        return where[key]

    return partitioner


@pytest.mark.timeout(SIZES.timeout)
async def test_every_event_delivered_three_times_has_exactly_one_effect(rig: Rig) -> None:
    sent = submissions(6, SIZES.events, portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    pipeline = await rig.pipeline()
    await rig.seed_resources(6, SIZES.portfolios)
    # The inbound stream, each submission three times in a row.
    await publish(
        rig.bootstrap,
        rig.topic(Topic.SUBMISSIONS),
        [(s.key, s.value) for s in sent for _ in range(3)],
    )
    await rig.ledger.wait_settled(
        expected, since=time.monotonic(), within=SIZES.timeout / 2, pipeline=pipeline
    )
    inbound_copies = 2 * len(sent)
    await eventually(
        lambda: _at_least(skipped(rig, pipeline), inbound_copies), what="inbound copies skipped"
    )
    before = await outbox_rows(rig)
    state_before = await rig.ledger.mismatches(expected)

    # Every internal event (and every resource update) published twice more, to the partition
    # it is on, with its headers: as a producer retry or a relay restart would resend them.
    copies: dict[str, int] = {}
    expected_skips = inbound_copies
    for topic, consumers in CONSUMERS.items():
        name = rig.topic(topic)
        if topic in PRODUCERS:
            count = int(
                await rig.conn.fetchval(
                    f"SELECT count(*) FROM {PRODUCERS[topic]}.outbox"
                    " WHERE topic = $1 AND sent_at IS NOT NULL",
                    name,
                )
            )
        else:
            count = 4 * SIZES.portfolios  # the seeded resources: a team per role per portfolio
        records = await read_topic(rig.bootstrap, name, lambda rs, n=count: len(rs) >= n)
        assert len(records) == count, (topic, len(records), count)
        items: list[Item] = [
            (r.key, r.value, [(k, bytes(v)) for k, v in r.headers]) for r in records
        ] * 2
        await publish(rig.bootstrap, name, items, partitioner=same_partition(records))
        copies[topic.value] = len(items)
        expected_skips += len(items) * len(consumers)

    await eventually(
        lambda: _at_least(skipped(rig, pipeline), expected_skips),
        within=SIZES.timeout / 2,
        what=f"{expected_skips} duplicates skipped",
    )
    counted = await skipped(rig, pipeline)
    after = await outbox_rows(rig)
    figures = await rig.ledger.figures(
        "6. every event delivered three times",
        expected,
        recovery=None,
        copies=copies,
        duplicates_skipped=counted,
    )
    assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures
    assert counted == expected_skips, (counted, expected_skips)
    # Not one more row was written by any service: no effect was repeated.
    assert after == before, (before, after)
    assert await rig.ledger.mismatches(expected) == state_before == {}


async def _at_least(value: Any, target: int) -> bool:
    return bool(await value >= target)


def poison(rng: random.Random, n: int, portfolios: int) -> list[tuple[bytes, bytes]]:
    """``n`` records of the kinds an upstream system gets wrong, cycling through them."""
    kinds = [
        lambda i: b"{not json",
        lambda i: b"\xff\xfe not utf-8",
        lambda i: json.dumps([1, 2, 3]).encode(),
        lambda i: json.dumps({"portfolio": f"rp{i % portfolios}", "revision": "one"}).encode(),
        lambda i: json.dumps(
            {
                "submission_id": f"00000000-0000-4000-8000-{i:012d}",
                "portfolio": f"rp{i % portfolios}",
                "source": "rel",
                "external_id": f"POISON{i}",
                "revision": 1,
                "submitted_at": "2026-11-25T10:00:00Z",
                "action": "upsert",
                "project": {"name": "x", "stage": "someday"},
            }
        ).encode(),
        lambda i: b'{"pad": "' + b"x" * (300 * 1024) + b'"}',
    ]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        out.append((f"rp{i % portfolios}/rel/POISON{i}".encode(), kind(i)))
    rng.shuffle(out)
    return out


@pytest.mark.timeout(SIZES.timeout)
async def test_one_percent_poison_is_dead_lettered_and_nothing_else(rig: Rig) -> None:
    rng = random.Random(7)
    sent = submissions(7, SIZES.events, portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    bad = poison(rng, max(6, SIZES.events // 100), SIZES.portfolios)
    items: list[Item] = [(s.key, s.value) for s in sent]
    for item in bad:
        items.insert(rng.randrange(len(items) + 1), item)
    pipeline = await rig.pipeline()
    await rig.seed_resources(7, SIZES.portfolios)
    feed = Feed(rig.bootstrap, rig.topic(Topic.SUBMISSIONS), items, SIZES.feed_seconds).start()
    finished = await feed.join()
    recovery = await rig.ledger.wait_settled(
        expected, since=finished, within=SIZES.timeout - 60, pipeline=pipeline
    )
    poisoned = {
        (d.partition, d.offset)
        for d, item in zip(feed.delivered, items, strict=True)
        if item in bad
    }

    async def all_dead_lettered() -> bool:
        return await rig.ledger.dead_lettered() >= len(bad)

    await eventually(all_dead_lettered, what="every poison record dead-lettered")
    letters = await rig.conn.fetch(
        "SELECT source_partition, source_offset, consumer, reasons FROM reporting.dead_letters"
    )
    assert {(r["source_partition"], r["source_offset"]) for r in letters} == poisoned
    assert all(r["consumer"] == "intake" for r in letters)
    assert all(json.loads(r["reasons"]) for r in letters), "every dead letter says why"
    # Lag back to 0: the group has committed past the last record it was sent.
    ends: dict[int, int] = defaultdict(lambda: -1)
    for d in feed.delivered:
        ends[d.partition] = max(ends[d.partition], d.offset)
    group = pipeline.group_id("intake")
    topic = rig.topic(Topic.SUBMISSIONS)

    async def caught_up() -> bool:
        positions = await committed(rig.bootstrap, group, topic)
        return all(positions[p] >= end + 1 for p, end in ends.items())

    await eventually(caught_up, what="intake's lag back to 0")
    figures = await rig.ledger.figures(
        "7. 1% poison among the stream",
        expected,
        events=len(items),
        recovery=recovery,
        poison=len(bad),
    )
    assert (figures.lost, figures.duplicated) == (0, 0), figures
    assert figures.dead_lettered == len(bad), figures


@pytest.mark.timeout(SIZES.timeout)
async def test_revisions_out_of_order_end_as_the_in_order_replay(rig: Rig) -> None:
    """Two identical portfolio families: "io" sent in order, "oo" with every project's
    revisions shuffled. Every service must end with the same open projects, scores, ranks and
    plans in both, and the same projects withdrawn at the same revision (a project withdrawn
    before its first revision arrived may be absent instead)."""
    count = max(60, SIZES.events // SIZES.revisions)
    ordered = submissions(
        8, count, portfolios=SIZES.portfolios, revisions=SIZES.revisions, prefix="io"
    )
    shuffled = submissions(
        8, count, portfolios=SIZES.portfolios, revisions=SIZES.revisions, prefix="oo"
    )
    random.Random(8).shuffle(shuffled)
    pipeline = await rig.pipeline()
    await rig.seed_resources(8, SIZES.portfolios, prefix="io")
    await rig.seed_resources(8, SIZES.portfolios, prefix="oo")
    started = time.monotonic()
    await asyncio.gather(
        publish(rig.bootstrap, rig.topic(Topic.SUBMISSIONS), [(s.key, s.value) for s in ordered]),
        publish(rig.bootstrap, rig.topic(Topic.SUBMISSIONS), [(s.key, s.value) for s in shuffled]),
    )
    expected_io = Expected.of(ordered)
    await rig.ledger.wait_settled(
        expected_io, since=started, within=SIZES.timeout / 2, pipeline=pipeline
    )
    expected_oo = Expected.of(sorted(shuffled, key=lambda s: (s.project_key, s.revision)))
    await rig.ledger.wait_settled(
        expected_oo, since=started, within=SIZES.timeout / 2, pipeline=pipeline
    )

    async def families_agree() -> bool:
        return not await family_differences(rig)

    try:
        await eventually(families_agree, within=60, what="the two families to agree")
    except AssertionError:
        raise AssertionError(await family_differences(rig)) from None
    recovery = time.monotonic() - started
    figures = await rig.ledger.figures(
        "8. out-of-order revisions per project",
        expected_oo,
        events=len(shuffled),
        recovery=recovery,
        projects=count,
        revisions=SIZES.revisions,
    )
    assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures


async def family_differences(rig: Rig) -> list[str]:
    """Rows of "oo" that differ from their "io" twin, service by service."""
    queries = {
        "intake": "SELECT project_key AS k, revision, withdrawn, state FROM intake.projects",
        "scoring": "SELECT project_key AS k, revision, withdrawn, published_score,"
        " published_rank FROM scoring.projects",
        "capacity": "SELECT p.project_key AS k, p.status, p.start_month, p.end_month"
        " FROM capacity.placements p",
        "reporting": "SELECT project_key AS k, revision, withdrawn, stage, score, rank,"
        " plan_status, start_month, end_month FROM reporting.projects",
    }
    differences = []
    for service, sql in queries.items():
        rows = await rig.conn.fetch(sql)
        families: dict[str, dict[str, Any]] = {"io": {}, "oo": {}}
        for r in rows:
            key = str(r["k"])
            family, rest = key[:2], key[2:]
            if family in families:
                value = {k: v for k, v in dict(r).items() if k != "k"}
                if "state" in value and value["state"] is not None:
                    state = json.loads(value["state"])
                    state.pop("portfolio", None)
                    value["state"] = state
                families[family][rest] = value
        for rest in sorted(set(families["io"]) | set(families["oo"])):
            a, b = families["io"].get(rest), families["oo"].get(rest)
            if a == b:
                continue
            if b is None and (a is None or a.get("withdrawn") or a.get("status") == "excluded"):
                continue  # withdrawn before any revision arrived: never published
            # Withdrawn at the same revision: the document a withdrawal carries is the newest
            # revision intake had seen when it arrived, which depends on the order
            # (docs/guarantees.md); what counts is that both are withdrawn.
            if (
                a
                and b
                and a.get("withdrawn")
                and b.get("withdrawn")
                and a["revision"] == b["revision"]
            ):
                continue
            differences.append(f"{service} {rest}: in order {a} / shuffled {b}")
    return differences[:20]
