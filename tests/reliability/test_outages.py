"""Infrastructure going away mid-stream: Postgres refusing every connection (scenario 3) and the
broker frozen (scenario 4). Services must retry with backoff, dead-letter nothing, stay up,
and drain afterwards."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.topics import Topic
from tests.reliability import harness
from tests.reliability.harness import SERVICES, SIZES, Expected, Feed, Rig, submissions

pytestmark = pytest.mark.e2e


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


async def transient_retries(pipeline: harness.Pipeline) -> float:
    total = 0.0
    for service in SERVICES:
        total += await pipeline.one(service).metric("pmo_transient_retries_total")
    return total


@pytest.mark.timeout(SIZES.timeout)
async def test_postgres_unavailable_mid_stream_is_retried_and_loses_nothing(rig: Rig) -> None:
    upstream = urlsplit(rig.database_url)
    proxy = harness.PostgresProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432)
    await proxy.start()
    try:
        sent = submissions(3, SIZES.events, portfolios=SIZES.portfolios)
        expected = Expected.of(sent)
        pipeline = await rig.pipeline(services_database_url=through(rig.database_url, proxy.port))
        await rig.seed_resources(3, SIZES.portfolios)
        feed = Feed(
            rig.bootstrap,
            rig.topic(Topic.SUBMISSIONS),
            [(s.key, s.value) for s in sent],
            SIZES.feed_seconds,
        ).start()
        await feed.reached(1 / 3)
        await proxy.outage()
        # The outage itself: Postgres refuses every connection for this long.
        await asyncio.sleep(SIZES.outage_seconds)
        for service in SERVICES:  # nobody gave up and exited while the database was gone
            assert pipeline.one(service).alive, pipeline.one(service).tail()
        await proxy.restore()
        restored = time.monotonic()
        await feed.join()
        recovery = await rig.ledger.wait_settled(
            expected, since=restored, within=SIZES.timeout - 60, pipeline=pipeline
        )
        retries = await transient_retries(pipeline)
        figures = await rig.ledger.figures(
            f"3. Postgres unavailable for {SIZES.outage_seconds:.0f} s",
            expected,
            recovery=recovery,
            transient_retries=retries,
        )
        assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures
        assert retries > 0, "the outage was met with retries"
        for service in SERVICES:
            await pipeline.one(service).ready()
    finally:
        await proxy.close()


@pytest.mark.timeout(SIZES.timeout)
async def test_broker_frozen_mid_stream_backs_off_and_drains(
    broker_rig: tuple[Rig, harness.Broker],
) -> None:
    rig, broker = broker_rig
    sent = submissions(4, SIZES.events, portfolios=SIZES.portfolios)
    expected = Expected.of(sent)
    pipeline = await rig.pipeline()
    await rig.seed_resources(4, SIZES.portfolios)
    feed = Feed(
        rig.bootstrap, rig.topic(Topic.SUBMISSIONS), [(s.key, s.value) for s in sent], 2
    ).start()
    await feed.reached(1 / 3)
    broker.freeze()
    try:
        # The fault itself: the broker process is stopped (SIGSTOP) for this long.
        await asyncio.sleep(SIZES.outage_seconds)
    finally:
        broker.thaw()
    thawed = time.monotonic()
    await feed.join()
    recovery = await rig.ledger.wait_settled(
        expected, since=thawed, within=SIZES.timeout - 60, pipeline=pipeline
    )
    figures = await rig.ledger.figures(
        f"4. broker frozen for {SIZES.outage_seconds:.0f} s", expected, recovery=recovery
    )
    assert (figures.lost, figures.duplicated, figures.dead_lettered) == (0, 0, 0), figures
    for service in SERVICES:
        assert pipeline.one(service).alive
