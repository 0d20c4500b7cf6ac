"""The freshness row of ``make bench``: how long after a submission is published it is visible
in the reporting API, at a steady rate below saturation; and, for scale, the latency of one raw
aiokafka produce -> consume hop on the same broker.

Visible means the project's own endpoint (``GET /api/v1/portfolios/{p}/projects/{source}/{id}``)
answers with the submitted revision. Every submission is published at the row's rate, and a
uniform sample of them (about ``TRACKED_PER_SECOND`` a second, every submission at a trickle) is
watched: as it is published, the observer asks for it with ``min_revision=1`` and ``wait``, the
API's long poll (services/reporting/waits.py), which answers once the read model has the
revision; a wait that runs out (a 404) is asked again. The sample keeps the observer's own load
on the API and Postgres small and independent of the rate; an observer that asked for every
pending project made its own queue at high rates (its requests waited seconds for a connection)
and measured itself. Earlier the observer asked for each watched project every 10 ms until it
was there, an answer half a poll period late on average and a dozen requests or more for each
(docs/performance.md). A latency is taken when the answer arrives, so it includes the API's
notice, its read and the response's way back."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.client import HttpClient
from bench.cpu import broker_pids, quarter_rates
from bench.harness import (
    API_TOKEN,
    PORTFOLIOS,
    encoded_submissions,
    paced,
    percentile,
    service_stack,
)
from bench.pipeline import per_submission_ms, published_per_submission, stack_meter
from shared.settings import ServiceSettings
from shared.topics import TOPIC_SPECS, Topic

LINGER_MS = 5  # what the services' producers use
# What the services' consumers wait for a batch, and let the broker hold an empty fetch.
BATCH_TIMEOUT_MS = ServiceSettings.model_fields["batch_timeout_ms"].default
FETCH_MAX_WAIT_MS = ServiceSettings.model_fields["fetch_max_wait_ms"].default
WAIT = 10  # seconds each of the observer's requests waits for its project (the API allows 20)
DERIVED_WAIT_SECONDS = 120.0
TRACKED_PER_SECOND = 10.0
SUBMISSION_PARTITIONS = next(s.partitions for s in TOPIC_SPECS if s.topic is Topic.SUBMISSIONS)


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int


@dataclass(frozen=True, slots=True)
class Freshness:
    latency: Latency
    # The p50 of the submissions published in each quarter of the row, in order: what builds
    # up as the row writes (the broker's stored batches, the portfolios' sizes).
    quarters: tuple[float, ...]
    # The broker's CPU in each quarter of publishing, ms a second (bench/cpu.py).
    broker_quarters: tuple[float, ...]
    # Where the sample's time went, stage by stage (``STAGES``): the p50 of each, in ms.
    stages: dict[str, float]
    # The derived work after it, for the same sample: publish to the project's first version in
    # reporting's read model with a score, and with a plan status (its written time).
    scored: Latency
    planned: Latency
    offered_per_second: float
    achieved_per_second: float
    watched: int  # submissions in the sample
    api_requests_per_second: float  # what the observer itself asks of the API
    published: dict[str, float]  # records each service published per submission
    cpu_ms: dict[str, float]  # CPU per submission by process group (bench/pipeline.py)
    # Seconds each process group waited for a core for each second it ran (bench/cpu.py)
    waits: dict[str, float]
    machine_busy: float  # busy share of all cores while the row ran, 0..1


@dataclass(frozen=True, slots=True)
class Hop:
    latency: Latency
    # The p50 of the records sent in each quarter of the row, and the broker's CPU in each
    # quarter (ms a second): what the local broker's stored batches cost it as a row goes
    # on, with no service in the way.
    quarters: tuple[float, ...]
    broker_quarters: tuple[float, ...]


def _latency(seconds: list[float]) -> Latency:
    return Latency(percentile(seconds, 50) * 1000, percentile(seconds, 99) * 1000, len(seconds))


async def hop(bootstrap: str, rate: float, seconds: float) -> Hop:
    """One raw hop: an aiokafka producer (the services' linger) to a consumer (``getmany`` with
    the services' batch timeout and fetch wait) on assigned partitions, at ``rate`` messages
    per second for ``seconds``: the freshness row's feed on a topic of the submissions
    topic's partitions, and nothing else."""
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=SUBMISSION_PARTITIONS, replication_factor=1)]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    await producer.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(SUBMISSION_PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count = max(2, int(rate * seconds))
        sent: dict[int, float] = {}
        taken: list[tuple[float, float]] = []  # (sent at, latency)
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
                            taken.append((sent[index], now - sent[index]))

        receiver = asyncio.create_task(receive())
        # The first record pays for metadata and connections; it is not counted.
        await producer.send_and_wait(topic, b"-1")
        await asyncio.wait_for(warm.wait(), 30)

        async def send(i: int) -> None:
            sent[i] = time.perf_counter()
            await producer.send(topic, str(i).encode(), key=str(i % 64).encode())

        started = time.perf_counter()
        broker = asyncio.create_task(quarter_rates(lambda: broker_pids(bootstrap), count / rate))
        await paced(rate, count, send)
        await asyncio.wait_for(receiver, 60)
        return Hop(
            latency=_latency([latency for _, latency in taken]),
            quarters=quarter_medians(taken, started, seconds),
            broker_quarters=await broker,
        )
    finally:
        await producer.stop()
        await consumer.stop()


@dataclass
class _Observer:
    """Watches the API for the sampled projects; see the module's docstring."""

    api: HttpClient
    expected: int
    pending: dict[str, float] = field(default_factory=dict)  # project key -> published at
    # project key -> published at, by the wall clock, which Postgres's timestamps share.
    wall: dict[str, float] = field(default_factory=dict)
    # project key -> (published at, its latency), as each was seen in the API
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    checks: int = 0
    watches: set[asyncio.Task[None]] = field(default_factory=set)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def taken(self) -> list[float]:
        return [latency for _, latency in self.seen.values()]

    def published(self, portfolio: str, external_id: str, at: float) -> None:
        key = f"{portfolio}/bench/{external_id}"
        self.pending[key] = at
        self.wall[key] = time.time()
        self.watches.add(asyncio.create_task(self._watch(key)))

    async def run(self) -> None:
        """Until every watched project has been seen; a watch's failure is raised here."""
        while len(self.seen) < self.expected:
            await self.progress.wait()
            self.progress.clear()
            for done in [w for w in self.watches if w.done()]:
                self.watches.discard(done)
                done.result()

    def cancel(self) -> None:
        for watch in self.watches:
            watch.cancel()

    async def _watch(self, key: str) -> None:
        portfolio, project = key.split("/", 1)
        path = f"/api/v1/portfolios/{portfolio}/projects/{project}?min_revision=1&wait={WAIT}"
        try:
            while key in self.pending:
                status, body = await self.api.get(path)
                now = time.perf_counter()
                self.checks += 1
                if status == 404:
                    continue  # not there when the wait ran out: asked again
                if status != 200:
                    raise RuntimeError(f"GET {path}: status {status}")
                if json.loads(body)["revision"] >= 1:
                    sent = self.pending.pop(key)
                    self.seen[key] = (sent, now - sent)
        finally:
            self.progress.set()

    def quarters(self, started: float, seconds: float) -> tuple[float, ...]:
        return quarter_medians(self.seen.values(), started, seconds)


def quarter_medians(
    seen: Iterable[tuple[float, float]], started: float, seconds: float
) -> tuple[float, ...]:
    """The p50 (ms) of the latencies of ``seen`` ((published at, latency) in seconds) published
    in each quarter of the ``seconds`` from ``started``."""
    bins: list[list[float]] = [[], [], [], []]
    for sent, latency in seen:
        bins[min(3, max(0, int((sent - started) / seconds * 4)))].append(latency)
    return tuple(percentile(b, 50) * 1000 if b else math.nan for b in bins)


def sample_stride(rate: float) -> int:
    """Watch every ``stride``-th submission: about ``TRACKED_PER_SECOND`` a second, and a stride
    prime to the number of portfolios, so that the sample covers all of them."""
    stride = max(1, round(rate / TRACKED_PER_SECOND))
    while math.gcd(stride, PORTFOLIOS) != 1:
        stride += 1
    return stride


async def freshness(
    bootstrap: str, server_url: str, rate: float, seconds: float = 20.0
) -> Freshness:
    """Publish submissions at ``rate`` per second for ``seconds`` to the four services and take
    each one's time to visible in the API."""
    count = max(2, int(rate * seconds))
    async with service_stack(bootstrap, server_url) as stack:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
        await producer.start()
        api = HttpClient(
            "127.0.0.1", stack.ports["reporting-api"], {"Authorization": f"Bearer {API_TOKEN}"}
        )
        watching: asyncio.Task[None] | None = None
        stride = sample_stride(rate)
        observer = _Observer(api, len(range(0, count, stride)))
        try:
            topic = stack.topics(Topic.SUBMISSIONS)
            await producer.client.force_metadata_update()
            watching = asyncio.create_task(observer.run())

            encoded = encoded_submissions(count)

            async def send(i: int) -> None:
                sent = encoded[i]
                if i % stride == 0:
                    observer.published(sent.portfolio, sent.external_id, time.perf_counter())
                await producer.send(topic, sent.value, key=sent.key)

            conn = await asyncpg.connect(stack.url)
            try:
                database = await conn.fetchval("SELECT current_database()")
                meter = stack_meter(stack, bootstrap, database)
                meter.start()
                started = time.perf_counter()
                broker = asyncio.create_task(
                    quarter_rates(lambda: broker_pids(bootstrap), count / rate)
                )
                achieved = await paced(rate, count, send)
                try:
                    await asyncio.wait_for(watching, 120)
                except TimeoutError:
                    missing = len(observer.pending)
                    raise RuntimeError(
                        f"{missing} of {observer.expected} watched submissions never visible"
                    ) from None
                elapsed = time.perf_counter() - started
                scored, planned = await derived(conn, observer.wall)
                # After the derived work of the sample, so that what runs behind it is counted.
                use = meter.stop()
                published = await published_per_submission(conn, count)
                stages = await stage_times(
                    conn, bootstrap, stack.topics(Topic.PROJECTS), observer.wall, observer.seen
                )
                broker_quarters = await broker
            finally:
                await conn.close()
            return Freshness(
                latency=_latency(observer.taken),
                quarters=observer.quarters(started, seconds),
                broker_quarters=broker_quarters,
                stages=stages,
                scored=_latency(scored),
                planned=_latency(planned),
                offered_per_second=rate,
                achieved_per_second=achieved,
                watched=observer.expected,
                api_requests_per_second=observer.checks / elapsed,
                published=published,
                cpu_ms=per_submission_ms(use, count),
                waits={group: use.wait_per_cpu_second(group) for group in use.seconds},
                machine_busy=use.machine_busy,
            )
        finally:
            if watching is not None:
                watching.cancel()
            observer.cancel()
            api.close()
            await producer.stop()


async def derived(
    conn: asyncpg.Connection, published: dict[str, float]
) -> tuple[list[float], list[float]]:
    """Wait (up to ``DERIVED_WAIT_SECONDS``) until every project in ``published`` (project key
    -> wall-clock publish time) is scored and planned in reporting's read model; return, for
    each, the seconds from its publishing to the first version of it with a score, and with a
    plan status. A version is dated when it is written (reporting's migration 0011), within
    its transaction, which commits a few statements later. The projects are found by their
    keys, through the indexes: this runs while the row's CPU meter does."""
    ids = list(published)
    async with asyncio.timeout(DERIVED_WAIT_SECONDS):
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM reporting.projects WHERE project_key = ANY($1::text[])"
                " AND score IS NOT NULL AND plan_status IS NOT NULL",
                ids,
            )
            if done == len(ids):
                break
            await asyncio.sleep(0.2)
    rows = await conn.fetch(
        "SELECT project_key,"
        " extract(epoch FROM min(valid_from) FILTER (WHERE score IS NOT NULL))::float8 AS scored,"
        " extract(epoch FROM min(valid_from) FILTER (WHERE plan_status IS NOT NULL))::float8"
        " AS planned"
        " FROM reporting.projects_history WHERE project_key = ANY($1::text[])"
        " GROUP BY project_key",
        ids,
    )
    return (
        [r["scored"] - published[r["project_key"]] for r in rows],
        [r["planned"] - published[r["project_key"]] for r in rows],
    )


# A sampled submission's path, stage by stage, each from the time the stage before it ended:
# what the services' own clocks wrote (Postgres's and Python's wall clock, one clock here).
STAGES = (
    # the load generator's send to the start of intake's transaction (its inbox claim)
    "publish -> intake's transaction",
    # intake's decisions, writes and commit, its relay's read: to the record's time, set as
    # the relay appends it to the producer's batch
    "intake's transaction -> its record",
    # the broker, reporting's fetch and its loop: to the start of reporting's transaction
    "intake's record -> reporting's transaction",
    # reporting's statements to the project's first version (written at the statement)
    "reporting's transaction -> the version",
    # reporting's commit, the API's notice and read, and its answer
    "the version -> seen in the API",
)


async def stage_times(
    conn: asyncpg.Connection,
    bootstrap: str,
    topic: str,
    published: dict[str, float],
    seen: dict[str, tuple[float, float]],
) -> dict[str, float]:
    """The p50 (ms) of each of ``STAGES`` over the sampled projects (``published``: key ->
    wall-clock publish time; ``seen``: key -> (publish time, latency to the API) as the
    observer took them), once the row has run.

    intake's transaction starts with its first statement, whose ``now()`` it stores as a new
    project's ``updated_at``; its record is found on ``topic`` by the project's key (the
    record's timestamp) and its event id in reporting's inbox (``received_at``, the start of
    the transaction that applied it); the version is the project's first in reporting's
    history (written at ``clock_timestamp()``)."""
    records: dict[str, tuple[float, str]] = {}  # project key -> (record time, event id)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        while len(records) < len(published):
            batches = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batches:
                break
            for batch in batches.values():
                for record in batch:
                    assert record.value is not None
                    event_id = dict(record.headers)["ce_id"].decode()
                    for change in json.loads(record.value)["changes"]:
                        if change["project_key"] in published and change["revision"] == 1:
                            records.setdefault(
                                change["project_key"], (record.timestamp / 1000, event_id)
                            )
    finally:
        await consumer.stop()
    rows = await conn.fetch(
        "SELECT p.project_key, extract(epoch FROM p.updated_at)::float8 AS intake,"
        " extract(epoch FROM i.received_at)::float8 AS reporting,"
        " (SELECT extract(epoch FROM min(h.valid_from))::float8"
        "  FROM reporting.projects_history h WHERE h.project_key = p.project_key) AS version"
        " FROM intake.projects p"
        " JOIN unnest($1::text[], $2::text[]) AS r (project_key, event_id) USING (project_key)"
        " JOIN reporting.inbox i ON i.event_id = r.event_id",
        list(records),
        [records[k][1] for k in records],
    )
    spans: list[list[float]] = [[] for _ in STAGES]
    for r in rows:
        key = r["project_key"]
        if key not in seen:
            continue
        times = (published[key], r["intake"], records[key][0], r["reporting"], r["version"])
        for span, (start, end) in zip(spans[:-1], itertools.pairwise(times), strict=True):
            span.append(end - start)
        spans[-1].append(published[key] + seen[key][1] - r["version"])
    return {
        stage: percentile(span, 50) * 1000 if span else math.nan
        for stage, span in zip(STAGES, spans, strict=True)
    }


async def idle_cost(bootstrap: str, server_url: str, seconds: float = 10.0) -> dict[str, float]:
    """CPU each process group spends per second while the four services run with nothing to
    do (milliseconds of CPU per second): the floor under every rate, mostly consumers' fetches
    the broker holds for the fetch wait and answers empty, and background workers' polls."""
    async with service_stack(bootstrap, server_url) as stack:
        conn = await asyncpg.connect(stack.url)
        try:
            database = await conn.fetchval("SELECT current_database()")
        finally:
            await conn.close()
        meter = stack_meter(stack, bootstrap, database)
        meter.start()
        await asyncio.sleep(seconds)
        use = meter.stop()
    return {group: cpu / seconds * 1000 for group, cpu in use.seconds.items()}
