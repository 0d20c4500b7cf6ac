"""The framework-overhead row of ``make bench``: the same relay (consume a batch from one topic,
publish it as one batch to another, wait for the broker's acknowledgement, commit the consumed
offsets) written with FastStream and written by hand with aiokafka, over the same pre-filled
input; messages per second of each.

Both use the same batching: up to ``BATCH`` records per batch with a ``BATCH_TIMEOUT_MS`` wait,
one produce batch per consumed batch (on a partition the partitioner picks for a keyless batch,
as FastStream's ``publish_batch`` does), the services' linger and acks. FastStream is set up as
the services set it up (a batch subscriber that commits after the handler, its log records at
DEBUG, and the services' decoder: bodies are handed over as the consumed bytes, not tried as
JSON one by one), without the project's Prometheus middleware, so the row measures the framework
itself.
The clock runs from the first consumed batch (consumer-group join excluded) to the last
acknowledged publish."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage

BATCH = 500
BATCH_TIMEOUT_MS = 20
FETCH_MAX_WAIT_MS = 20
LINGER_MS = 5
MAX_BATCH_BYTES = 1024 * 1024  # a whole consumed batch fits in one produce batch
PARTITIONS = 6


async def topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def fill(bootstrap: str, messages: int, payload: int, *, keys: int = 64) -> str:
    """A new topic holding ``messages`` records of ``payload`` bytes, keyed over ``keys``
    distinct keys; returns its name."""
    topic = f"bench-relay-in-{uuid.uuid4().hex[:8]}"
    await topics(bootstrap, topic)
    value = os.urandom(payload // 2).hex().encode()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=LINGER_MS, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=str(i % keys).encode()) for i in range(messages)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic


class _Clock:
    def __init__(self, messages: int) -> None:
        self.messages = messages
        self.relayed = 0
        self.first: float | None = None
        self.done = asyncio.Event()
        self.finished = 0.0

    def consumed(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def published(self, count: int) -> None:
        self.relayed += count
        if self.relayed >= self.messages and not self.done.is_set():
            self.finished = time.perf_counter()
            self.done.set()

    @property
    def per_second(self) -> float:
        assert self.first is not None
        return self.relayed / (self.finished - self.first)


async def faststream_relay(bootstrap: str, source: str, messages: int) -> float:
    """A FastStream batch subscriber publishing each batch with a batch publisher; msgs/s."""
    target = f"bench-relay-fs-{uuid.uuid4().hex[:8]}"
    await topics(bootstrap, target)
    quiet = logging.getLogger("bench.faststream")
    quiet.setLevel(logging.WARNING)
    broker = KafkaBroker(
        bootstrap,
        acks="all",
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        log_level=logging.DEBUG,
        logger=quiet,
    )
    publisher = broker.publisher(target, batch=True)
    clock = _Clock(messages)

    async def raw_bodies(message: StreamMessage[Any]) -> list[bytes]:
        return [r.value or b"" for r in message.raw_message]

    @broker.subscriber(
        source,
        group_id=target,
        batch=True,
        max_records=BATCH,
        batch_timeout_ms=BATCH_TIMEOUT_MS,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
        decoder=raw_bodies,
    )
    async def relay(bodies: list[bytes]) -> None:
        clock.consumed()
        await publisher.publish(*bodies)
        clock.published(len(bodies))

    await broker.start()
    try:
        await asyncio.wait_for(clock.done.wait(), 300)
    finally:
        await broker.stop()
    return clock.per_second


async def hand_clients(
    bootstrap: str, source: str, *, group: str
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """A started consumer of ``source`` (from the beginning, offsets committed by hand, the
    services' fetch wait) and a started producer (the services' acks and linger) for a loop
    written by hand."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS, max_batch_size=MAX_BATCH_BYTES
    )
    await producer.start()
    try:
        await consumer.start()
    except BaseException:
        await producer.stop()
        raise
    return consumer, producer


async def aiokafka_relay(bootstrap: str, source: str, messages: int) -> float:
    """The same relay by hand: ``getmany``, one ``send_batch``, wait, commit; msgs/s."""
    target = f"bench-relay-ak-{uuid.uuid4().hex[:8]}"
    await topics(bootstrap, target)
    consumer, producer = await hand_clients(bootstrap, source, group=target)
    clock = _Clock(messages)
    try:
        async with asyncio.timeout(300):
            while not clock.done.is_set():
                batches = await consumer.getmany(timeout_ms=BATCH_TIMEOUT_MS, max_records=BATCH)
                records = [r for rs in batches.values() for r in rs]
                if not records:
                    continue
                clock.consumed()
                batch = producer.create_batch()
                for record in records:
                    if batch.append(key=None, value=record.value, timestamp=None) is None:
                        raise RuntimeError("a consumed batch does not fit in one produce batch")
                await (await producer.send_batch(batch, target, partition=None))
                await consumer.commit()
                clock.published(len(records))
    finally:
        await consumer.stop()
        await producer.stop()
    return clock.per_second


async def framework_overhead(
    bootstrap: str, messages: int, payload: int, *, faststream_first: bool
) -> tuple[float, float]:
    """msgs/s of the FastStream relay and of the aiokafka relay over one pre-filled topic; the
    order alternates between rounds so neither always runs on a warmer broker."""
    source = await fill(bootstrap, messages, payload)
    if faststream_first:
        fs = await faststream_relay(bootstrap, source, messages)
        ak = await aiokafka_relay(bootstrap, source, messages)
    else:
        ak = await aiokafka_relay(bootstrap, source, messages)
        fs = await faststream_relay(bootstrap, source, messages)
    return fs, ak
