"""Kafka administration: creating the registry's topics."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.broker import client_options
from shared.settings import KafkaSettings
from shared.topics import TOPIC_SPECS, TopicNames, TopicSpec


async def ensure_topics(
    settings: KafkaSettings,
    specs: tuple[TopicSpec, ...] = TOPIC_SPECS,
    *,
    replication_factor: int = 1,
    partitions: int | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    names = TopicNames(settings.topic_prefix)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                names(spec.topic),
                num_partitions=partitions or spec.partitions,
                replication_factor=replication_factor,
                topic_configs=spec.config,
            )
            for spec in specs
            if names(spec.topic) not in existing
        ]
        if wanted:
            # Another runner may create them between list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()
