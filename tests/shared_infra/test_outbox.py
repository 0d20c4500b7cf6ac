"""The outbox relay against real Postgres and the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import pytest
from aiokafka import AIOKafkaConsumer

from shared import outbox
from shared.broker import make_producer
from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.outbox import OutboxMessage, OutboxRelay, producer_publish
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic, TopicNames
from tests.conftest import service_url
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_rows_are_published_in_order_and_marked_and_survive_a_failed_publish(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t"
    )
    topic = TopicNames(kafka.topic_prefix)(Topic.SCORES)
    published: list[OutboxMessage] = []
    fail_once = True

    async def publish(message: OutboxMessage) -> Awaitable[object]:
        nonlocal fail_once
        if fail_once and len(published) == 3:
            fail_once = False
            raise ConnectionError("broker went away")  # mid-batch: nothing gets marked
        published.append(message)
        return await send(message)

    producer = make_producer(kafka, client_id="outbox-test")
    send = producer_publish(producer)
    await producer.start()
    try:
        relay = OutboxRelay(pool, "scoring", publish, batch_size=100)
        messages = [
            OutboxMessage(topic, b"retail/jira/P", f"{i}".encode(), {"ce_id": f"e{i}"})
            for i in range(10)
        ]
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, messages)
        with pytest.raises(ConnectionError):
            await relay.relay_once()
        assert await relay.backlog() == (10, pytest.approx(0, abs=60))
        assert await relay.relay_once() == 10
        assert (await relay.backlog())[0] == 0
        assert await relay.relay_once() == 0
    finally:
        await producer.stop()
        await pool.close()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"probe-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    seen: list[bytes] = []
    try:

        async def all_arrived() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(r.value for r in batch)
            return len(seen) >= 13

        await eventually(all_arrived, what="13 records (3 republished)")
    finally:
        await consumer.stop()
    # The first three were published before the failure and again after it (at-least-once);
    # one key, so one partition, so the order of each pass is the order of the outbox.
    assert seen == [b"0", b"1", b"2"] + [f"{i}".encode() for i in range(10)]
