"""Test helpers: waiting on conditions with a deadline, building submissions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.cli.publishing import partitions_of
from shared.consumer_record import Record
from shared.contracts.events import Contribution, ProjectChanged, ProjectScored, ProjectState
from shared.outbox import OutboxMessage

T = TypeVar("T")


async def stop(process: asyncio.subprocess.Process, sig: int, within: float) -> None:
    """Send ``process`` the signal ``sig`` and wait ``within`` seconds for it to exit; kill it
    if it has not."""
    process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        process.kill()
        await process.wait()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)  # the poll interval of a deadline-bounded wait


def project_changed(
    portfolio: str,
    external_id: str,
    revision: int = 1,
    *,
    name: str | None = None,
    withdrawn: bool = False,
    at: datetime = datetime(2026, 12, 1, tzinfo=UTC),
) -> ProjectChanged:
    """Intake's event for revision ``revision`` of project ``external_id`` (source "jira") of
    ``portfolio``, named ``name`` (by default after its id and revision)."""
    return ProjectChanged(
        project_key=f"{portfolio}/jira/{external_id}",
        portfolio=portfolio,
        revision=revision,
        submission_id=f"sub-{external_id}-{revision}",
        occurred_at=at,
        withdrawn=withdrawn,
        project=ProjectState(
            name=name if name is not None else f"{external_id} r{revision}",
            portfolio=portfolio,
            source="jira",
            external_id=external_id,
        ),
    )


def project_scored(
    portfolio: str, external_id: str, *, ranking_version: int, rank: int, score: float
) -> ProjectScored:
    """Scoring's score of revision 1 of project ``external_id`` (source "jira") of
    ``portfolio`` in ranking ``ranking_version``, its one contribution the whole score."""
    return ProjectScored(
        project_key=f"{portfolio}/jira/{external_id}",
        portfolio=portfolio,
        project_revision=1,
        ranking_version=ranking_version,
        model="weighted-default",
        model_version=1,
        score=score,
        rank=rank,
        mandatory=False,
        explanation=[
            Contribution(criterion="risk", raw=2, normalised=0.5, weight=1, contribution=score)
        ],
        cause="project_revision",
    )


def submission(
    external_id: str = "PRJ-1",
    *,
    portfolio: str = "retail",
    source: str = "jira",
    revision: int = 1,
    action: str = "upsert",
    submission_id: str | None = None,
    **project: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"Project {external_id}",
        "stage": "proposal",
        "value": 1_000_000,
        "cost": 250_000,
        "currency": "EUR",
        "strategic_fit": {"growth": 4},
        "risk": 2,
        "earliest_start": "2027-01",
        "deadline": "2027-12",
        "demand": [{"role": "backend", "fte": 1.0, "start_month": 0, "months": 3}],
    }
    body.update(project)
    message: dict[str, Any] = {
        "submission_id": submission_id or str(uuid.uuid4()),
        "portfolio": portfolio,
        "source": source,
        "external_id": external_id,
        "revision": revision,
        "submitted_at": "2026-11-25T10:00:00Z",
        "action": action,
    }
    if action == "upsert":
        message["project"] = body
    return message


def key_of(message: dict[str, Any]) -> bytes:
    return f"{message['portfolio']}/{message['source']}/{message['external_id']}".encode()


async def publish_raw(
    bootstrap: str,
    topic: str,
    items: list[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Publish as an upstream system would: a plain aiokafka producer, no pmo code."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for key, value in items
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def publish_json(bootstrap: str, topic: str, messages: list[dict[str, Any]]) -> None:
    await publish_raw(bootstrap, topic, [(key_of(m), json.dumps(m).encode()) for m in messages])


def consumed(message: OutboxMessage, offset: int = 0) -> Record:
    """``message`` as the record a consumer reads from partition 0 at ``offset``."""
    return Record(
        topic=message.topic,
        partition=0,
        offset=offset,
        key=message.key,
        value=message.value,
        headers=tuple((k, v.encode()) for k, v in message.headers.items()),
        timestamp_ms=0,
    )


async def committed(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (-1 where none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        out = {}
        for tp in await partitions_of(consumer, topic):
            offset = await consumer.committed(tp)
            out[tp.partition] = -1 if offset is None else offset
        return out
    finally:
        await consumer.stop()
