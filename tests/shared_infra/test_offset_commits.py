"""Offsets are committed after the batches' transactions, at most once an interval, and all of
them when a consumer stops or a rebalance takes its partitions (real tansu); a stop whose
commit fails goes on (a consumer whose broker is gone, a stand-in for the failure)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY

from shared.broker import make_broker
from shared.consumer import BatchRunner, OffsetCommits, offset_commits, subscribe
from shared.consumer_record import Record
from shared.errors import Reason
from shared.settings import KafkaSettings, ServiceSettings
from shared.topics import Topic, TopicNames
from tests.helpers import committed, eventually

pytestmark = pytest.mark.integration

RECORDS = 20
APART = 0.02  # seconds between two records of the trickle


@dataclass
class Member:
    """A consumer of the group, as a service registers one, and the batches it handled."""

    broker: KafkaBroker
    service: str
    batches: list[int] = field(default_factory=list)

    @property
    def commits(self) -> OffsetCommits:
        found = offset_commits(self.broker.subscribers[0])
        assert found is not None
        return found

    def commits_sent(self) -> float:
        sent = REGISTRY.get_sample_value("pmo_offset_commits_total", {"service": self.service})
        return sent or 0.0


def member(kafka: KafkaSettings, topic: str, group: str, interval_ms: int) -> Member:
    service = f"commits-{uuid.uuid4().hex[:8]}"  # the metric's label: its own count
    broker = make_broker(kafka, client_id=service)
    joined = Member(broker, service)

    async def handle(records: Sequence[Record]) -> None:
        joined.batches.append(len(records))

    async def poison(record: Record, reasons: list[Reason]) -> None:
        raise AssertionError(f"nothing here is poison: {record.coordinates} {reasons}")

    subscribe(
        broker,
        [topic],
        settings=ServiceSettings(group_id=group, commit_interval_ms=interval_ms),
        runner=BatchRunner(service, handle, poison),
        service=service,
    )
    return joined


async def trickle(kafka: KafkaSettings, topic: str, count: int) -> None:
    """``count`` records a few milliseconds apart, spread over the topic's partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=0)
    await producer.start()
    try:
        sent = []
        for i in range(count):
            sent.append(await producer.send(topic, str(i).encode(), key=f"k{i}".encode()))
            await asyncio.sleep(APART)
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def handled(consumer: Member, count: int) -> None:
    await eventually(
        lambda: asyncio.sleep(0, result=sum(consumer.batches) >= count), what=f"{count} handled"
    )


def total(offsets: dict[int, int]) -> int:
    return sum(max(0, offset) for offset in offsets.values())


@pytest.mark.timeout(120)
async def test_nothing_is_committed_before_the_interval_and_everything_at_the_stop(
    kafka: KafkaSettings,
) -> None:
    topic = TopicNames(kafka.topic_prefix)(Topic.SUBMISSIONS)
    group = f"commits-{uuid.uuid4().hex[:8]}"
    consumer = member(kafka, topic, group, interval_ms=600_000)
    await consumer.broker.start()
    try:
        await trickle(kafka, topic, RECORDS)
        await handled(consumer, RECORDS)
        assert len(consumer.batches) > 1, consumer.batches  # several batches, none committed
        assert total(await committed(kafka.bootstrap_servers, group, topic)) == 0
        assert consumer.commits_sent() == 0

        await consumer.commits.close()  # what a graceful stop does first (shared/runtime.py)
        assert total(await committed(kafka.bootstrap_servers, group, topic)) == RECORDS
        assert consumer.commits_sent() == 1
    finally:
        await consumer.broker.stop()


@pytest.mark.timeout(120)
async def test_a_steady_feed_commits_once_an_interval_and_an_idle_consumer_catches_up(
    kafka: KafkaSettings,
) -> None:
    topic = TopicNames(kafka.topic_prefix)(Topic.RESOURCES)
    group = f"commits-{uuid.uuid4().hex[:8]}"
    consumer = member(kafka, topic, group, interval_ms=1000)
    await consumer.broker.start()
    try:
        started = time.monotonic()
        await trickle(kafka, topic, RECORDS)
        await handled(consumer, RECORDS)
        # The last batches' offsets are committed by the timer, with no batch after them.
        await eventually(
            lambda: all_committed(kafka, group, topic), what="every offset committed", within=30
        )
        took = time.monotonic() - started
        # At most one commit a second (and the timer's last one), whatever the batches.
        assert consumer.commits_sent() <= took + 2, (consumer.commits_sent(), took)
        assert len(consumer.batches) > consumer.commits_sent(), consumer.batches
    finally:
        await consumer.broker.stop()


async def all_committed(kafka: KafkaSettings, group: str, topic: str) -> bool:
    return total(await committed(kafka.bootstrap_servers, group, topic)) == RECORDS


@pytest.mark.timeout(180)
async def test_a_rebalance_commits_the_partitions_it_takes_away(kafka: KafkaSettings) -> None:
    topic = TopicNames(kafka.topic_prefix)(Topic.SCORING_COMMANDS)
    group = f"commits-{uuid.uuid4().hex[:8]}"
    first = member(kafka, topic, group, interval_ms=600_000)
    await first.broker.start()
    second: Member | None = None
    try:
        await trickle(kafka, topic, RECORDS)
        await handled(first, RECORDS)
        assert total(await committed(kafka.bootstrap_servers, group, topic)) == 0

        # A second member joins: the group rebalances, and the first commits before it
        # gives its partitions up, though no interval has passed.
        second = member(kafka, topic, group, interval_ms=600_000)
        await second.broker.start()
        await eventually(
            lambda: all_committed(kafka, group, topic),
            what="the revoked partitions' offsets committed",
            within=90,
        )
        assert first.commits_sent() >= 1
        assert second.batches == []  # it took up where the first had stopped
    finally:
        for joined in (second, first):
            if joined is not None:
                await joined.broker.stop()


class _Unreachable:
    """A consumer whose broker is gone for its first ``failures`` commits."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.committed: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0), TopicPartition("t", 1)}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("the broker is gone")
        self.committed.append({tp: meta.offset for tp, meta in offsets.items()})


def _record(partition: int, offset: int) -> Record:
    return Record(
        topic="t",
        partition=partition,
        offset=offset,
        key=None,
        value=b"",
        headers=(),
        timestamp_ms=0,
    )


async def test_a_stop_whose_commit_fails_goes_on_and_keeps_the_offsets_for_the_next() -> None:
    consumer = _Unreachable(failures=1)
    commits = OffsetCommits(lambda: consumer, 600.0, f"commits-{uuid.uuid4().hex[:8]}")
    await commits.processed([_record(0, 4), _record(1, 7)])
    assert consumer.committed == []  # not due
    await commits.close()  # the broker is gone: logged, not raised
    assert consumer.committed == []
    # The batch in flight ends after it: committed at once, with what the stop could not.
    await commits.processed([_record(0, 5)])
    assert consumer.committed == [{TopicPartition("t", 0): 6, TopicPartition("t", 1): 8}]
