"""Processes dying without warning: kill -9 of each service in turn mid-stream (scenario 1) and
of an outbox relay caught between publishing its batch and marking it sent (scenario 5)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from shared.cli.publishing import partitions_of
from shared.topics import Topic
from tests.helpers import eventually
from tests.reliability.harness import (
    SERVICES,
    SIZES,
    Expected,
    Feed,
    Rig,
    ce_id,
    submissions,
)

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


class TopicTail:
    """Every ``ce_id`` published to a topic, as it arrives (a consumer outside any group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._topic = topic
        self.seen: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TopicTail:
        await self._consumer.start()
        partitions = await partitions_of(self._consumer, self._topic)
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            for batch in (await self._consumer.getmany(timeout_ms=100)).values():
                self.seen.update(i for i in map(ce_id, batch) if i is not None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


@pytest.mark.timeout(SIZES.timeout)
async def test_relay_killed_between_publish_and_mark_sent_duplicates_no_effect(
    rig: Rig,
) -> None:
    sent = submissions(5, SIZES.events, portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    pipeline = await rig.pipeline()
    await rig.seed_resources(5, SIZES.portfolios)
    projects = rig.topic(Topic.PROJECTS)
    tail = await TopicTail(rig.bootstrap, projects).start()
    feed = Feed(
        rig.bootstrap,
        rig.topic(Topic.SUBMISSIONS),
        [(s.key, s.value) for s in sent],
        SIZES.feed_seconds * 2,
    ).start()
    # The window between the broker's acknowledgement and the relay's UPDATE ... SET sent_at is
    # a few milliseconds. The test holds it open: it takes row locks on the unsent rows, so the
    # relay publishes them (its read takes no lock) and then waits at its UPDATE, which it runs
    # only once the broker has acknowledged the batch. When the relay's session is seen waiting
    # on the holder (pg_blocking_pids), intake is killed and the waiting statement's session is
    # ended with it, before the locks are let go: the mark never happens, as when the process
    # dies before its UPDATE reaches the server. (Left alone, a session waiting on a lock does
    # not notice that its client is gone, and the mark, a statement of its own, would then
    # commit: right, since the broker had the rows, but not the case under test.) The rows stay
    # unsent and the restarted relay publishes them again. Waiting on the relay's lock wait
    # rather than on a new copy on the topic also covers a batch the relay had published just
    # before the holder took its locks. SKIP LOCKED: rows the relay is marking are not waited
    # for (the holder never waits, so it cannot deadlock with the relay).
    holder = await asyncpg.connect(rig.database_url)
    watcher = await asyncpg.connect(rig.database_url)  # pg_locks read outside the holder's snapshot
    caught = polls = 0

    async def relay_waits() -> list[int]:
        """The sessions (the relay's, at its UPDATE) waiting on the holder's row locks."""
        rows = await watcher.fetch(
            "SELECT pid FROM pg_locks WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid))",
            holder.get_server_pid(),
        )
        return [r["pid"] for r in rows]

    try:
        while caught < SIZES.relay_kills:
            feed.raise_if_failed()
            polls += 1
            intake = pipeline.one("intake")
            async with holder.transaction():
                held = await holder.fetch(
                    "SELECT id FROM intake.outbox"
                    " WHERE sent_at IS NULL AND topic = $1 ORDER BY id FOR UPDATE SKIP LOCKED",
                    projects,
                )
                if not held:
                    if feed.sent >= len(sent):
                        break  # the stream is all sent and nothing is held: no more to catch
                    await asyncio.sleep(0.01)  # the poll interval while the feed runs
                    continue

                waiting = await eventually(
                    relay_waits, within=30, what="the relay waiting to mark sent"
                )
                caught += 1  # published and acknowledged, not yet marked sent: the moment to die
                await intake.kill()
                await watcher.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", waiting
                )
            await intake.start()
        restarted = time.monotonic()
        await feed.join()
        recovery = await rig.ledger.wait_settled(
            expected, since=restarted, within=SIZES.timeout - 60, pipeline=pipeline
        )
        republished = sum(n - 1 for n in tail.seen.values() if n > 1)
    finally:
        await holder.close()
        await watcher.close()
        await tail.stop()
    figures = await rig.ledger.figures(
        "5. relay killed between publish and mark-sent",
        expected,
        recovery=recovery,
        relay_kills=caught,
        republished_in_transport=republished,
    )
    assert caught >= 1, f"no kill landed between publish and mark-sent in {polls} polls"
    assert republished > 0, "the restarted relay published the caught batch again"
    assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures
