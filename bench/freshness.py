"""The freshness row of ``make bench``: how long after a submission is published it is visible
in the reporting API, at a steady rate below saturation; and, for scale, the latency of one raw
aiokafka produce -> consume hop on the same broker.

Visible means the project's own endpoint (``GET /api/v1/portfolios/{p}/projects/{source}/{id}``)
answers with the submitted revision. The API has no change feed that names projects (its
``/changes`` marker only says that something in a portfolio changed), so it is polled: one cheap
request for all portfolios (``GET /api/v1/portfolios``, a project count each) on a fixed
schedule, and when a portfolio's count grows, one request per pending project of that portfolio.
A latency is taken when the confirming response arrives, so it is an upper bound: it includes
the wait for the next poll (half the poll period on average) and two request round trips,
reported with the row."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import paced, percentile, service_stack, submission, submission_key
from bench.pipeline import published_per_submission
from shared.settings import ServiceSettings
from shared.topics import Topic

LINGER_MS = 5  # what the services' producers use
# What the services' consumers wait for a batch, and let the broker hold an empty fetch.
BATCH_TIMEOUT_MS = ServiceSettings.model_fields["batch_timeout_ms"].default
FETCH_MAX_WAIT_MS = ServiceSettings.model_fields["fetch_max_wait_ms"].default
POLL_SECONDS = 0.010


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int


@dataclass(frozen=True, slots=True)
class Freshness:
    latency: Latency
    offered_per_second: float
    achieved_per_second: float
    poll_period_ms: float  # between two polls of the portfolio list, measured
    poll_rtt_ms: float  # mean round trip of that poll
    check_rtt_ms: float  # mean round trip of one project's check
    api_requests_per_second: float  # what the observer itself asks of the API
    published: dict[str, float]  # records each service published per submission


def _latency(seconds: list[float]) -> Latency:
    return Latency(percentile(seconds, 50) * 1000, percentile(seconds, 99) * 1000, len(seconds))


async def hop(bootstrap: str, rate: float, seconds: float) -> Latency:
    """One raw hop: an aiokafka producer (the services' linger) to a consumer (``getmany`` with
    the services' batch timeout and fetch wait) on assigned partitions, at ``rate`` messages
    per second."""
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    await producer.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(6)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count = max(2, int(rate * seconds))
        sent: dict[int, float] = {}
        taken: list[float] = []
        warm = asyncio.Event()

        async def receive() -> None:
            while len(taken) < count:
                batches = await consumer.getmany(timeout_ms=BATCH_TIMEOUT_MS, max_records=500)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        assert record.value is not None
                        index = int(record.value)
                        if index < 0:
                            warm.set()
                        else:
                            taken.append(now - sent[index])

        receiver = asyncio.create_task(receive())
        # The first record pays for metadata and connections; it is not counted.
        await producer.send_and_wait(topic, b"-1")
        await asyncio.wait_for(warm.wait(), 30)

        async def send(i: int) -> None:
            sent[i] = time.perf_counter()
            await producer.send(topic, str(i).encode(), key=str(i % 64).encode())

        await paced(rate, count, send)
        await asyncio.wait_for(receiver, 60)
        return _latency(taken)
    finally:
        await producer.stop()
        await consumer.stop()


@dataclass
class _Observer:
    """Watches the API for the pending projects; see the module's docstring."""

    api: httpx.AsyncClient
    expected: int
    pending: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    taken: list[float] = field(default_factory=list)
    polls: int = 0
    poll_time: float = 0.0
    checks: int = 0
    check_time: float = 0.0

    def published(self, portfolio: str, external_id: str, at: float) -> None:
        self.pending[portfolio][external_id] = at

    async def run(self) -> None:
        counts: dict[str, int] = {}
        due = time.perf_counter()
        while len(self.taken) < self.expected:
            asked = time.perf_counter()
            response = await self.api.get("/api/v1/portfolios")
            response.raise_for_status()
            self.polls += 1
            self.poll_time += time.perf_counter() - asked
            grown = []
            for row in response.json():
                if row["projects"] > counts.get(row["portfolio"], 0):
                    grown.append(row["portfolio"])
                counts[row["portfolio"]] = row["projects"]
            await asyncio.gather(*(self._check(p, e) for p in grown for e in list(self.pending[p])))
            due += POLL_SECONDS
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                due = time.perf_counter()  # behind: poll again at once, without a burst

    async def _check(self, portfolio: str, external_id: str) -> None:
        asked = time.perf_counter()
        path = f"/api/v1/portfolios/{portfolio}/projects/bench/{external_id}"
        response = await self.api.get(path)
        now = time.perf_counter()
        self.checks += 1
        self.check_time += now - asked
        if response.status_code == 404:
            return
        response.raise_for_status()
        if response.json()["revision"] == 1 and external_id in self.pending[portfolio]:
            self.taken.append(now - self.pending[portfolio].pop(external_id))


async def freshness(
    bootstrap: str, server_url: str, rate: float, seconds: float = 20.0
) -> Freshness:
    """Publish submissions at ``rate`` per second for ``seconds`` to the four services and take
    each one's time to visible in the API."""
    count = max(2, int(rate * seconds))
    async with service_stack(bootstrap, server_url) as stack:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
        await producer.start()
        api = stack.api(timeout=30.0, limits=httpx.Limits(max_connections=64))
        try:
            observer = _Observer(api, count)
            topic = stack.topics(Topic.SUBMISSIONS)
            await producer.client.force_metadata_update()
            watching = asyncio.create_task(observer.run())

            async def send(i: int) -> None:
                message = submission(i)
                value = json.dumps(message).encode()
                key = submission_key(message)
                portfolio, external_id = str(message["portfolio"]), str(message["external_id"])
                observer.published(portfolio, external_id, time.perf_counter())
                await producer.send(topic, value, key=key)

            started = time.perf_counter()
            achieved = await paced(rate, count, send)
            try:
                await asyncio.wait_for(watching, 120)
            except TimeoutError:
                missing = sum(len(v) for v in observer.pending.values())
                raise RuntimeError(f"{missing} of {count} submissions never visible") from None
            elapsed = time.perf_counter() - started
            conn = await asyncpg.connect(stack.url)
            try:
                published = await published_per_submission(conn, count)
            finally:
                await conn.close()
            return Freshness(
                latency=_latency(observer.taken),
                offered_per_second=rate,
                achieved_per_second=achieved,
                poll_period_ms=elapsed / observer.polls * 1000,
                poll_rtt_ms=observer.poll_time / observer.polls * 1000,
                check_rtt_ms=observer.check_time / max(1, observer.checks) * 1000,
                api_requests_per_second=(observer.polls + observer.checks) / elapsed,
                published=published,
            )
        finally:
            await api.aclose()
            await producer.stop()
