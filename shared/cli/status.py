"""``pmo topics status``: every topic's partitions and end offsets, and each consumer group's
committed position and lag on the topics it reads."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from shared.broker import client_options
from shared.cli.publishing import partitions_of
from shared.settings import KafkaSettings
from shared.topics import TOPIC_SPECS, Topic, TopicNames

# Which topics each service's consumer group reads (their default group ids).
GROUPS: dict[str, tuple[Topic, ...]] = {
    "pmo-intake": (Topic.SUBMISSIONS,),
    "pmo-scoring": (Topic.PROJECTS, Topic.SCORING_COMMANDS),
    "pmo-capacity": (Topic.PROJECTS, Topic.SCORES, Topic.RESOURCES, Topic.CAPACITY_COMMANDS),
    "pmo-reporting": (
        Topic.PROJECTS,
        Topic.SCORES,
        Topic.PLANS,
        Topic.PLAN_SUMMARIES,
        Topic.SCENARIOS,
        Topic.SCORING_AUDIT,
        Topic.DEAD_LETTERS,
    ),
}


@dataclass(frozen=True, slots=True)
class Row:
    group: str | None
    topic: str
    partitions: int
    end: int
    committed: int | None

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else max(0, self.end - self.committed)


async def status(kafka: KafkaSettings, groups: dict[str, tuple[Topic, ...]] = GROUPS) -> list[Row]:
    """End offsets per topic (summed over partitions) and, per group, the committed offsets.
    A broker may report an end that trails the true end by a batch; lag is indicative."""
    names = TopicNames(kafka.topic_prefix)
    probe = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await probe.start()
    rows: list[Row] = []
    try:
        ends: dict[Topic, dict[object, int]] = {}
        for spec in TOPIC_SPECS:
            partitions = await partitions_of(probe, names(spec.topic))
            ends[spec.topic] = await probe.end_offsets(partitions) if partitions else {}
            rows.append(
                Row(None, names(spec.topic), len(partitions), sum(ends[spec.topic].values()), None)
            )
    finally:
        await probe.stop()
    for group, topics in groups.items():
        consumer = AIOKafkaConsumer(
            **client_options(kafka), group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            for topic in topics:
                committed = 0
                for tp in ends[topic]:
                    committed += await consumer.committed(tp) or 0
                rows.append(
                    Row(group, names(topic), len(ends[topic]), sum(ends[topic].values()), committed)
                )
        finally:
            await consumer.stop()
    return rows
