"""Rebuilding reporting's read model from the topics: ``pmo-reporting rebuild``.

With the reporting service stopped, it empties every table built from events, then moves the
reporting consumer group back to the beginning of each topic. The next start replays
everything; the result equals the live read model (tested), because every event carries its
version and the read model keeps only the newest.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.reporting.app import TOPICS
from services.reporting.repository import truncate_read_model
from services.reporting.settings import ReportingSettings
from shared.broker import client_options
from shared.settings import DatabaseSettings, KafkaSettings, service_database_url
from shared.topics import TopicNames

log = logging.getLogger(__name__)


async def rewind_group(kafka: KafkaSettings, group_id: str, wait_seconds: float = 60) -> int:
    """Join ``group_id`` as its only member, take every partition of reporting's topics, and
    commit offset 0 for each; returns the number of partitions. Reporting must be stopped."""
    names = [TopicNames(kafka.topic_prefix)(topic) for topic in TOPICS]
    consumer = AIOKafkaConsumer(
        **client_options(kafka), group_id=group_id, enable_auto_commit=False
    )
    consumer.subscribe(names)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata of every topic
        expected = {
            TopicPartition(name, p)
            for name in names
            for p in consumer.partitions_for_topic(name) or ()
        }
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while consumer.assignment() != expected:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"{group_id} still has other members; stop the reporting service first"
                )
            await consumer.getmany(timeout_ms=200, max_records=1)
        await consumer.commit(dict.fromkeys(expected, 0))
        return len(expected)
    finally:
        await consumer.stop()


async def rebuild(
    settings: ReportingSettings, kafka: KafkaSettings, database: DatabaseSettings
) -> int:
    conn = await asyncpg.connect(
        service_database_url(settings, database, "pmo_reporting"),
        server_settings={"search_path": "reporting"},
    )
    try:
        async with conn.transaction():
            await truncate_read_model(conn)
    finally:
        await conn.close()
    return await rewind_group(kafka, settings.group_id)


def main() -> None:
    logging.basicConfig(level="INFO")
    partitions = asyncio.run(rebuild(ReportingSettings(), KafkaSettings(), DatabaseSettings()))
    log.info("read model emptied; %d partitions rewound: start reporting to replay", partitions)
