"""Publishing from the command line, with a plain producer, as upstream systems do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress

from shared.broker import client_options
from shared.cli.importer import ImportResult
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames


async def publish(
    kafka: KafkaSettings,
    records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]],
    console: Console | None = None,
    label: str = "publishing",
) -> int:
    """Publish (topic, key, value, headers) records; returns how many the broker acknowledged."""
    producer = AIOKafkaProducer(
        **client_options(kafka), enable_idempotence=kafka.enable_idempotence, linger_ms=5
    )
    await producer.start()
    try:
        with Progress(console=console, transient=True, disable=console is None) as progress:
            task = progress.add_task(label, total=len(records))
            pending = []
            for topic, key, value, headers in records:
                future = await producer.send(topic, value=value, key=key, headers=headers)
                future.add_done_callback(lambda _: progress.advance(task))
                pending.append(future)
            await asyncio.gather(*pending)
        return len(pending)
    finally:
        await producer.stop()


async def publish_import(kafka: KafkaSettings, result: ImportResult, console: Console) -> int:
    topic = TopicNames(kafka.topic_prefix)(Topic.SUBMISSIONS)
    records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = [
        (topic, key, json.dumps(m).encode(), []) for _, key, m in result.submissions
    ]
    return await publish(kafka, records, console, "importing")


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (fetching the cluster's metadata if the client has none)."""
    found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer.topics()  # fetches the metadata of every topic
        found = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(found)]
