"""Consumer groups changing under a stream: a rolling restart with two replicas (scenario 2)
and scaling a group 1 -> 3 -> 1 (scenario 9). Each change rebalances the group; in-flight
batches must finish or be redelivered, never lost or applied twice."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from shared.topics import Topic
from tests.reliability.harness import SIZES, Expected, Feed, Rig, ServiceProcess, submissions

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 20  # PMO_<SERVICE>_SHUTDOWN_GRACE_SECONDS' default; the manifests give 35


def assert_stopped_gracefully(replica: ServiceProcess, code: int) -> None:
    # uvicorn re-raises the signal once its graceful shutdown is done, so the exit status
    # is 0 or "terminated by SIGTERM"; the log says whether the stop ran to its end.
    assert code in (0, -signal.SIGTERM), replica.tail()
    assert f'"message": "{replica.service} stopped"' in replica.tail(15), replica.tail()


@pytest.mark.timeout(SIZES.timeout)
async def test_rolling_restart_of_two_replicas_loses_and_duplicates_nothing(rig: Rig) -> None:
    sent = submissions(2, SIZES.events, portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    pipeline = await rig.pipeline({"intake": 2})
    await rig.seed_resources(2, SIZES.portfolios)
    feed = Feed(
        rig.bootstrap,
        rig.topic(Topic.SUBMISSIONS),
        [(s.key, s.value) for s in sent],
        SIZES.feed_seconds,
    ).start()
    stops: list[float] = []
    old = list(pipeline.live("intake"))
    for n, replica in enumerate(old):
        await feed.reached((n + 1) / (len(old) + 2))
        await rig.ledger.catch_in_transaction("intake")
        started = time.monotonic()
        code = await replica.terminate(within=GRACE_SECONDS + 5)
        stops.append(time.monotonic() - started)
        assert_stopped_gracefully(replica, code)
        await pipeline.add("intake")  # the rolling update's replacement
    restarted = time.monotonic()
    await feed.join()
    recovery = await rig.ledger.wait_settled(
        expected, since=restarted, within=SIZES.timeout - 60, pipeline=pipeline
    )
    figures = await rig.ledger.figures(
        "2. SIGTERM rolling restart, 2 replicas",
        expected,
        recovery=recovery,
        stop_seconds=[round(s, 1) for s in stops],
    )
    assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures
    # A stop past the grace period is shown with the end of its log: what it waited for.
    assert max(stops) < GRACE_SECONDS, {
        r.name: (round(stop, 1), r.tail())
        for r, stop in zip(old, stops, strict=True)
        if stop >= GRACE_SECONDS
    }


@pytest.mark.timeout(SIZES.timeout)
async def test_scaling_a_group_up_and_down_mid_stream_loses_and_duplicates_nothing(
    rig: Rig,
) -> None:
    sent = submissions(9, SIZES.events, portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    pipeline = await rig.pipeline()
    await rig.seed_resources(9, SIZES.portfolios)
    feed = Feed(
        rig.bootstrap,
        rig.topic(Topic.SUBMISSIONS),
        [(s.key, s.value) for s in sent],
        SIZES.feed_seconds,
    ).start()
    await feed.reached(1 / 4)
    # Up: two more capacity replicas join the group (the replan queue is shared by all).
    await asyncio.gather(pipeline.add("capacity"), pipeline.add("capacity"))
    await feed.reached(2 / 3)
    # Down: the two oldest leave, one gracefully and one killed, so the group shrinks to 1.
    first, second, _ = pipeline.live("capacity")
    assert_stopped_gracefully(first, await first.terminate(within=GRACE_SECONDS + 5))
    await second.kill()
    scaled = time.monotonic()
    await feed.join()
    recovery = await rig.ledger.wait_settled(
        expected, since=scaled, within=SIZES.timeout - 60, pipeline=pipeline
    )
    figures = await rig.ledger.figures(
        "9. capacity group scaled 1 -> 3 -> 1", expected, recovery=recovery
    )
    assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures
    assert len(pipeline.live("capacity")) == 1
