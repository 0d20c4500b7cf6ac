"""A consumer's fetch settings reach the broker (real tansu): with ``fetch_min_bytes`` high, a
steady trickle arrives in batches of the fetch wait instead of a few records each; and a
consumer's loop waits for records in ``getmany`` alone, never in a sleep a record waits out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber import usecase

from shared.broker import make_broker
from shared.consumer import BatchRunner, subscribe
from shared.consumer_record import Record
from shared.errors import Reason
from shared.settings import KafkaSettings, ServiceSettings
from shared.topics import Topic, TopicNames
from tests.helpers import eventually

pytestmark = pytest.mark.integration

RECORDS = 30
APART = 0.02  # seconds between two records of the trickle


def subscribed(
    broker: KafkaBroker,
    topic: str,
    settings: ServiceSettings,
    handle: Callable[[Sequence[Record]], Awaitable[None]],
) -> None:
    """Register ``handle`` on ``topic`` as a service does (``subscribe``); nothing is poison."""

    async def poison(record: Record, reasons: list[Reason]) -> None:
        raise AssertionError(f"nothing here is poison: {record.coordinates} {reasons}")

    subscribe(
        broker,
        [topic],
        settings=settings,
        runner=BatchRunner("test", handle, poison),
        service="test",
    )


async def batches_of_a_trickle(
    kafka: KafkaSettings, settings: ServiceSettings, topic: str
) -> list[int]:
    """The sizes of the batches a consumer with ``settings`` sees of a steady trickle."""
    sizes: list[int] = []

    async def handle(records: Sequence[Record]) -> None:
        sizes.append(len(records))

    broker = make_broker(kafka, client_id="batching-test")
    subscribed(broker, topic, settings, handle)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=0)
    await broker.start()
    await producer.start()
    try:
        # The group has joined once a first record is consumed; the trickle starts after it.
        await producer.send_and_wait(topic, b"first", key=b"k")
        await eventually(lambda: asyncio.sleep(0, result=bool(sizes)), what="the first record")
        sizes.clear()
        # On a schedule, not waiting for each acknowledgement: a slow machine does not stretch
        # the trickle.
        sent = []
        for i in range(RECORDS):
            sent.append(await producer.send(topic, str(i).encode(), key=b"k"))
            await asyncio.sleep(APART)
        await asyncio.gather(*sent)
        await eventually(lambda: asyncio.sleep(0, result=sum(sizes) == RECORDS), what="all")
        return list(sizes)
    finally:
        await producer.stop()
        await broker.stop()


@pytest.mark.timeout(120)
async def test_fetch_min_bytes_turns_a_trickle_into_batches_of_the_fetch_wait(
    kafka: KafkaSettings,
) -> None:
    # Latency first (the defaults): the broker answers as soon as a record is there.
    names = TopicNames(kafka.topic_prefix)
    eager = await batches_of_a_trickle(
        kafka, ServiceSettings(group_id="eager"), names(Topic.SUBMISSIONS)
    )
    # Batching: the broker holds each fetch for its wait, gathering what arrives meanwhile.
    patient = await batches_of_a_trickle(
        kafka,
        ServiceSettings(group_id="patient", fetch_min_bytes=1 << 20, fetch_max_wait_ms=1000),
        names(Topic.RESOURCES),
    )
    # 30 records over about 0.6 s: most alone or in twos at first, in one or two batches of the
    # fetch wait after (three if the trickle straddles two waits on a slow machine).
    assert len(eager) >= 10, eager
    assert len(patient) <= 3, patient


WAIT_MS = 50  # the loops' batch wait here
EMPTY = 4  # empty answers to watch for


class _SleepsRecorded:
    """FastStream's subscriber module's ``anyio``, with its ``sleep`` calls recorded."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await anyio.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(anyio, name)


async def idle_loop(
    kafka: KafkaSettings, topic: str, monkeypatch: pytest.MonkeyPatch, *, ours: bool
) -> tuple[int, int, float]:
    """(empty answers, sleeps after one, seconds watched) of a batch subscriber's loop with
    nothing to consume, watched until it has answered empty ``EMPTY`` times: registered through
    ``subscribe`` when ``ours``, as FastStream makes it otherwise."""
    recorded = _SleepsRecorded()
    monkeypatch.setattr(usecase, "anyio", recorded)
    settings = ServiceSettings(group_id=f"idle-{ours}", batch_timeout_ms=WAIT_MS)
    broker = make_broker(kafka, client_id="idle-test")
    if ours:

        async def nothing(records: Sequence[Record]) -> None:
            raise AssertionError("nothing was published")

        subscribed(broker, topic, settings, nothing)
        subscriber = broker.subscribers[-1]
    else:
        subscriber = broker.subscriber(
            topic,
            group_id=settings.group_id,
            batch=True,
            batch_timeout_ms=settings.batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
        )
        subscriber(lambda message: None)
    empty = 0
    get_msg = subscriber.get_msg

    async def counted(consumer: object) -> object:
        nonlocal empty
        records = await get_msg(consumer)
        empty += not records
        return records

    subscriber.get_msg = counted  # type: ignore[method-assign]
    await broker.start()
    started = time.monotonic()
    try:
        await eventually(lambda: asyncio.sleep(0, result=empty >= EMPTY), what="empty answers")
        return empty, len(recorded.slept), time.monotonic() - started
    finally:
        await broker.stop()


@pytest.mark.timeout(120)
async def test_an_idle_loop_waits_in_getmany_and_never_sleeps_past_a_record(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = TopicNames(kafka.topic_prefix)(Topic.SUBMISSIONS)
    # FastStream's own loop sleeps a batch wait after each empty answer: a record arriving
    # then waits it out.
    empty, slept, _ = await idle_loop(kafka, topic, monkeypatch, ours=False)
    assert slept >= empty - 1, (empty, slept)
    # A service's loop asks again at once; it still waits, in getmany, for a record to come.
    empty, slept, watched = await idle_loop(kafka, topic, monkeypatch, ours=True)
    assert slept == 0, (empty, slept)
    # Not spinning: one empty answer per batch wait at most.
    assert empty <= watched / (WAIT_MS / 1000) + 1, (empty, watched)


GAP = 0.5  # seconds between the records a batch's processing publishes


async def batches_after_a_slow_one(
    kafka: KafkaSettings, topic: str, *, ahead: bool
) -> list[list[bytes]]:
    """The batches a consumer (``fetch_ahead`` = ``ahead``) sees when its first batch takes
    a second to process, and publishes "a" as it starts and "b" half way through it (each
    acknowledged by the broker before the processing goes on)."""
    seen: list[list[bytes]] = []
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=0)

    async def handle(records: Sequence[Record]) -> None:
        seen.append([r.value or b"" for r in records])
        if len(seen) == 1:
            await producer.send_and_wait(topic, b"a", key=b"k")
            await asyncio.sleep(GAP)
            await producer.send_and_wait(topic, b"b", key=b"k")
            await asyncio.sleep(GAP)

    broker = make_broker(kafka, client_id="fetch-ahead-test")
    settings = ServiceSettings(group_id=f"ahead-{ahead}", fetch_ahead=ahead)
    subscribed(broker, topic, settings, handle)
    await producer.start()
    await broker.start()
    try:
        await producer.send_and_wait(topic, b"first", key=b"k")
        await eventually(
            lambda: asyncio.sleep(0, result=sum(map(len, seen)) == 3), what="three records"
        )
        return seen
    finally:
        await broker.stop()
        await producer.stop()


@pytest.mark.timeout(120)
async def test_a_batch_holds_what_was_published_while_the_last_was_processed(
    kafka: KafkaSettings,
) -> None:
    names = TopicNames(kafka.topic_prefix)
    # aiokafka's consumer fetches ahead: it keeps "a", fetched early in the slow batch, and
    # fetches no more until the loop takes it; "b" waits for the batch after.
    ahead = await batches_after_a_slow_one(kafka, names(Topic.SUBMISSIONS), ahead=True)
    assert ahead == [[b"first"], [b"a"], [b"b"]], ahead
    # A service's consumer (the default) fetches when its loop asks: both in the next batch.
    asked = await batches_after_a_slow_one(kafka, names(Topic.RESOURCES), ahead=False)
    assert asked == [[b"first"], [b"a", b"b"]], asked
