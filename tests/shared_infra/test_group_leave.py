"""A replica that stops gracefully leaves its consumer group at once, on the real broker.

tansu numbers a group's first generation 0 and aiokafka leaves only from generation 1 on, so
without shared.consumer.leave_first_generation a replica stopped before its group's first
rebalance stayed a member until its session timed out, and a replacement's join waited for it."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient

from services.intake.app import build
from services.intake.settings import IntakeSettings
from shared.consumer import Membership, leave_first_generation, membership
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings, KafkaSettings

pytestmark = pytest.mark.integration


async def members(kafka: KafkaSettings, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    ((error_code, _, _state, _, _, group_members),) = response.groups
    assert error_code == 0, response
    return [member[0] for member in group_members]


@pytest.mark.timeout(120)
async def test_a_replica_stopped_in_the_first_generation_leaves_its_group(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    await migrate(database.url, [service_component("intake")])
    group = f"{kafka.topic_prefix}pmo-intake"
    # One consumer (the submissions' role): the case is a member in its first generation.
    runtime = build(
        IntakeSettings(group_id=group, role="submissions"), kafka=kafka, database=database
    )
    async with runtime:  # started: its consumer has joined and holds partitions
        joined = await members(kafka, group)
        assert len(joined) == 1, joined
        (subscriber,) = runtime.broker.subscribers
        member = membership(subscriber)
        assert member is not None
        assert member.member_id == joined[0]
        assert member.generation == 0  # the case this covers
    assert await members(kafka, group) == []


async def test_leaving_is_a_best_effort_that_never_fails_a_stop(
    kafka: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    client = AIOKafkaClient(bootstrap_servers=kafka.bootstrap_servers)
    await client.bootstrap()
    try:
        nowhere = Membership("g", "m-1", generation=0, coordinator=4242)  # no such broker
        await leave_first_generation(client, nowhere, within=5)
    finally:
        await client.close()
    assert "could not leave group g" in caplog.text
