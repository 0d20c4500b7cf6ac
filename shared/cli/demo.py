"""The demo portfolio, published exactly as upstream systems would publish it."""

from __future__ import annotations

import asyncio
import json
import uuid
from importlib import resources
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.broker import client_options
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames

_NAMESPACE = uuid.UUID("6f1c7a52-7d0e-4c55-9c3e-0b5d1f6a9e10")


def demo_messages() -> list[tuple[Topic, bytes, dict[str, Any]]]:
    """(topic, key, value) of every demo message. Ids are derived from content, so loading the
    demo twice has one effect."""
    data = json.loads((resources.files("shared.demo") / "retail.json").read_text())
    portfolio = data["portfolio"]
    messages: list[tuple[Topic, bytes, dict[str, Any]]] = []
    for resource in data["resources"]:
        update = {"portfolio": portfolio, "revision": 1, "action": "upsert", **resource}
        update["update_id"] = str(uuid.uuid5(_NAMESPACE, f"resource/{resource['resource_id']}/1"))
        messages.append(
            (Topic.RESOURCES, f"{portfolio}/{resource['resource_id']}".encode(), update)
        )
    for project in data["projects"]:
        external_id, source = project.pop("external_id"), project.pop("source", "jira")
        submission = {
            "submission_id": str(uuid.uuid5(_NAMESPACE, f"{source}/{external_id}/1")),
            "portfolio": portfolio,
            "source": source,
            "external_id": external_id,
            "revision": 1,
            "submitted_at": "2026-11-25T10:00:00Z",
            "action": "upsert",
            "project": project,
        }
        messages.append(
            (Topic.SUBMISSIONS, f"{portfolio}/{source}/{external_id}".encode(), submission)
        )
    return messages


async def load_demo(kafka: KafkaSettings) -> int:
    names = TopicNames(kafka.topic_prefix)
    producer = AIOKafkaProducer(**client_options(kafka), enable_idempotence=False)
    await producer.start()
    try:
        messages = demo_messages()
        futures = [
            await producer.send(names(topic), key=key, value=json.dumps(value).encode())
            for topic, key, value in messages
        ]
        await asyncio.gather(*futures)
        return len(messages)
    finally:
        await producer.stop()
