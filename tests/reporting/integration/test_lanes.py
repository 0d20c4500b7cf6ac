"""Reporting's project lane on a real broker and Postgres: a project change is shown while a
batch of scores waits, because project changes have a consumer of their own. With one
consumer for every topic (``PMO_REPORTING_PROJECTS_LANE=false``) the same change waits
behind that batch, which is what the lane is for."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from shared.cloudevents import event_message
from shared.contracts.events import ProjectChanged, ProjectScore, ProjectState, ScoresChanged
from shared.outbox import OutboxMessage
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic, TopicNames
from tests.helpers import eventually, publish_raw
from tests.system import System, running

pytestmark = pytest.mark.integration

PORTFOLIO = "lanes"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def changed(external_id: str) -> ProjectChanged:
    state = ProjectState(
        name=external_id, portfolio=PORTFOLIO, source="jira", external_id=external_id
    )
    return ProjectChanged(
        project_key=f"{PORTFOLIO}/jira/{external_id}",
        portfolio=PORTFOLIO,
        revision=1,
        submission_id=f"sub-{external_id}",
        occurred_at=NOW,
        project=state,
    )


def scores(external_id: str, score: float) -> ScoresChanged:
    return ScoresChanged(
        portfolio=PORTFOLIO,
        ranking_version=1,
        model="weighted-default",
        model_version=1,
        scores=[
            ProjectScore(
                project_key=f"{PORTFOLIO}/jira/{external_id}",
                project_revision=1,
                score=score,
                rank=1,
                mandatory=False,
                explanation=[],
                cause="project_revision",
            )
        ],
    )


async def publish(system: System, topic: Topic, event: Any, event_id: str) -> None:
    names = TopicNames(system.kafka.topic_prefix)
    key = getattr(event, "project_key", PORTFOLIO)
    message: OutboxMessage = event_message(
        topic=names(topic), key=key, event=event, event_id=event_id, source="test", time=NOW
    )
    await publish_raw(
        system.kafka.bootstrap_servers,
        message.topic,
        [(message.key, message.value)],
        [(k, v.encode()) for k, v in message.headers.items()],
    )


async def shown(system: System, external_id: str) -> dict[str, Any] | None:
    response = await system.api.get(f"/api/v1/portfolios/{PORTFOLIO}/projects/jira/{external_id}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def reporting_waits_on_a_lock(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'pmo-reporting' AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lane", [True, False], ids=["projects-lane", "one-consumer"])
async def test_a_project_change_does_not_wait_behind_a_batch_of_scores(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    monkeypatch: pytest.MonkeyPatch,
    lane: bool,
) -> None:
    monkeypatch.setenv("PMO_REPORTING_PROJECTS_LANE", str(lane).lower())
    async with running(database, kafka, services=("reporting",)) as system:
        subscribers: list[Any] = list(system.runtimes["reporting"].broker.subscribers)
        consumed = sorted((sorted(t.name for t in s.topics) for s in subscribers), key=len)
        assert (consumed[0] == [system.topics(Topic.PROJECTS)]) is lane
        assert len(consumed) == (2 if lane else 1)
        assert {s.group_id for s in subscribers} == {"pmo-reporting"}
        await publish(system, Topic.PROJECTS, changed("A"), "lanes:A")
        await eventually(lambda: shown(system, "A"), what="project A shown")

        # Hold project A's row: the batch applying A's score waits for it.
        conn = await asyncpg.connect(database.url)
        try:
            holding = conn.transaction()
            await holding.start()
            await conn.execute(
                "SELECT 1 FROM reporting.projects WHERE project_key = $1 FOR UPDATE",
                f"{PORTFOLIO}/jira/A",
            )
            await publish(system, Topic.SCORES, scores("A", 42.0), "lanes:scores:A")
            await eventually(
                lambda: reporting_waits_on_a_lock(conn), what="the scores batch waiting"
            )
            await publish(system, Topic.PROJECTS, changed("B"), "lanes:B")
            if lane:
                await eventually(lambda: shown(system, "B"), what="project B shown")
            else:
                # Nothing to wait for: B is fetched behind the waiting batch. Some seconds
                # are enough for the lane to have shown it (above, well under one).
                await asyncio.sleep(3)
                assert await shown(system, "B") is None
            assert await reporting_waits_on_a_lock(conn), "the scores batch still waits"
            a = await shown(system, "A")
            assert a is not None
            assert a["score"] is None
            await holding.rollback()
        finally:
            await conn.close()

        async def scored() -> bool:
            a, b = await shown(system, "A"), await shown(system, "B")
            return a is not None and a["score"] == 42.0 and b is not None

        await eventually(scored, what="A's score and project B once the row is free")
