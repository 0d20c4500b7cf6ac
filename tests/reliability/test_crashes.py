"""Processes dying without warning: kill -9 of each service in turn mid-stream (scenario 1) and
of an outbox relay caught between publishing its batch and marking it sent (scenario 5)."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.topics import Topic
from tests.reliability.harness import SERVICES, SIZES, Expected, Feed, Rig, submissions

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(SIZES.timeout)
async def test_kill_9_of_each_service_in_turn_loses_and_duplicates_nothing(rig: Rig) -> None:
    sent = submissions(1, SIZES.events, portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    pipeline = await rig.pipeline()
    await rig.seed_resources(1, SIZES.portfolios)
    feed = Feed(
        rig.bootstrap,
        rig.topic(Topic.SUBMISSIONS),
        [(s.key, s.value) for s in sent],
        SIZES.feed_seconds,
    ).start()
    mid_transaction = {}
    for n, service in enumerate(SERVICES):
        await feed.reached((n + 1) / (len(SERVICES) + 1))
        victim = pipeline.one(service)
        mid_transaction[service] = await rig.ledger.catch_in_transaction(service)
        await victim.kill()
        await victim.start(ready=False)
    await asyncio.gather(*(pipeline.one(s).ready() for s in SERVICES))
    restarted = time.monotonic()
    await feed.join()
    recovery = await rig.ledger.wait_settled(
        expected, since=restarted, within=SIZES.timeout - 60, pipeline=pipeline
    )
    figures = await rig.ledger.figures(
        "1. kill -9 of each service in turn",
        expected,
        recovery=recovery,
        killed_mid_transaction=sum(mid_transaction.values()),
    )
    assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures
