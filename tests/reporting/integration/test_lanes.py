"""Reporting's project lane on a real broker and Postgres: a project change is shown while a
batch of scores waits, because project changes have a consumer of their own. With one
consumer for every topic (``PMO_REPORTING_PROJECTS_LANE=false``) the same change waits
behind that batch, which is what the lane is for. And what concurrent batches (the lanes', or
replicas') leave when they write one project: its history in order, its change counted."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.reporting.handlers import ReportingHandler
from services.reporting.repository import ReadModelQueries, ReportingUnitOfWork
from shared.cloudevents import event_message
from shared.contracts.events import ProjectChanged, ProjectScore, ScoresChanged
from shared.outbox import OutboxMessage
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic, TopicNames
from tests.helpers import consumed, eventually, project_changed, publish_raw
from tests.reporting.integration.conftest import APPLICATION
from tests.system import System, running

pytestmark = pytest.mark.integration

PORTFOLIO = "lanes"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def key(external_id: str) -> str:
    return f"{PORTFOLIO}/jira/{external_id}"


def changed(external_id: str, revision: int = 1) -> ProjectChanged:
    return project_changed(PORTFOLIO, external_id, revision, at=NOW)


def scores(*external_ids: str, score: float) -> ScoresChanged:
    return ScoresChanged(
        portfolio=PORTFOLIO,
        ranking_version=1,
        model="weighted-default",
        model_version=1,
        scores=[
            ProjectScore(
                project_key=key(external_id),
                project_revision=1,
                score=score,
                rank=rank,
                mandatory=False,
                explanation=[],
                cause="project_revision",
            )
            for rank, external_id in enumerate(external_ids, start=1)
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


@dataclass(frozen=True, slots=True)
class _Held:
    conn: asyncpg.Connection
    application: str

    async def waited_for(self) -> bool:
        """Whether a connection of ``application`` waits for a lock."""
        waiting = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = $1 AND wait_event_type = 'Lock'",
            self.application,
        )
        return bool(waiting)


@contextlib.asynccontextmanager
async def holding(
    database: DatabaseSettings, project_key: str, application: str
) -> AsyncIterator[_Held]:
    """Project ``project_key``'s read-model row held by another transaction until the block
    ends; ``waited_for`` says whether ``application``'s connections wait for it."""
    conn = await asyncpg.connect(database.url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(
            "SELECT 1 FROM reporting.projects WHERE project_key = $1 FOR UPDATE", project_key
        )
        try:
            yield _Held(conn, application)
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("layout", ["projects-lane", "one-consumer", "roles"])
async def test_a_project_change_does_not_wait_behind_a_batch_of_scores(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
) -> None:
    """With the lane, or with project changes in a process of their own (the ``projects`` and
    ``others`` roles), a project change does not wait; with one consumer it does."""
    lane = layout != "one-consumer"
    monkeypatch.setenv("PMO_REPORTING_PROJECTS_LANE", str(layout == "projects-lane").lower())
    async with running(database, kafka, services=(), split_reporting=layout == "roles") as system:
        subscribers: list[Any] = [
            s
            for name in ("reporting", "reporting-projects")
            if name in system.runtimes
            for s in system.runtimes[name].broker.subscribers
        ]
        consumed = sorted((sorted(t.name for t in s.topics) for s in subscribers), key=len)
        assert (consumed[0] == [system.topics(Topic.PROJECTS)]) is lane
        assert len(consumed) == (2 if lane else 1)
        group = system.runtimes["reporting"].settings.group_id
        assert {s.group_id for s in subscribers} == {group}
        # The lane times its batches under a label of its own.
        lane_batches = {"service": "reporting", "consumer": Topic.PROJECTS.value}
        before = REGISTRY.get_sample_value("pmo_batch_seconds_count", lane_batches) or 0.0
        await publish(system, Topic.PROJECTS, changed("A"), "lanes:A")
        await eventually(lambda: shown(system, "A"), what="project A shown")
        after = REGISTRY.get_sample_value("pmo_batch_seconds_count", lane_batches) or 0.0
        assert (after > before) is (layout == "projects-lane")

        # Hold project A's row: the batch applying A's score waits for it.
        async with holding(database, key("A"), "pmo-reporting") as held:
            await publish(system, Topic.SCORES, scores("A", score=42.0), "lanes:scores:A")
            await eventually(held.waited_for, what="the scores batch waiting")
            await publish(system, Topic.PROJECTS, changed("B"), "lanes:B")
            if lane:
                await eventually(lambda: shown(system, "B"), what="project B shown")
            else:
                # Nothing to wait for: B is fetched behind the waiting batch. Some seconds
                # are enough for the lane to have shown it (above, well under one).
                await asyncio.sleep(3)
                assert await shown(system, "B") is None
            assert await held.waited_for(), "the scores batch still waits"
            a = await shown(system, "A")
            assert a is not None
            assert a["score"] is None

        async def scored() -> bool:
            a, b = await shown(system, "A"), await shown(system, "B")
            return a is not None and a["score"] == 42.0 and b is not None

        await eventually(scored, what="A's score and project B once the row is free")


class _Batches:
    """Reporting's batches applied by its handler, as its consumers would, on ``pool``."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.names = TopicNames()
        self.handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), self.names, lambda: NOW)
        self.queries = ReadModelQueries(pool)
        self._offsets = iter(range(1000))

    def record(self, topic: Topic, event: Any, event_id: str) -> Any:
        message = event_message(
            topic=self.names(topic),
            key=getattr(event, "project_key", PORTFOLIO),
            event=event,
            event_id=event_id,
            source="test",
            time=NOW,
        )
        return consumed(message, next(self._offsets))

    async def handle(self, records: list[Any]) -> None:
        await self.handler.handle(records)

    async def overtaken(self, database: DatabaseSettings, first: Any, second: Any) -> None:
        """Apply ``first`` in a batch that begins, then waits for project A's row while
        ``second``'s batch commits; the change marker moves with each of the commits."""
        async with holding(database, key("A"), APPLICATION) as held:
            waiting = asyncio.create_task(self.handle([first]))
            await eventually(held.waited_for, what="the first batch waiting")
            before = await self.queries.change_marker(PORTFOLIO)
            await self.handle([second])
            between = await self.queries.change_marker(PORTFOLIO)
        await waiting
        after = await self.queries.change_marker(PORTFOLIO)
        assert before != between, "the overtaking commit moves the change marker"
        assert between != after, "the overtaken commit moves the change marker"


async def test_a_batch_that_began_first_but_wrote_last_keeps_the_history_in_order(
    reporting_pool: asyncpg.Pool[Any], database: DatabaseSettings
) -> None:
    """The case two consumers of one group make: a batch of scores begins, waits for a row,
    and writes project X after a batch of project changes committed X's next revision. X's
    versions still follow each other in the order they were written (none ends before it
    begins, none overlaps the next), ``as_of`` shows X once at every instant, and the
    dashboard's change marker moves with each commit."""
    batches = _Batches(reporting_pool)
    await batches.handle(
        [
            batches.record(Topic.PROJECTS, changed("A"), "h:A:1"),
            batches.record(Topic.PROJECTS, changed("X"), "h:X:1"),
        ]
    )
    # Scores for A and X, in key order: the batch begins and waits on A before X, while
    # X's revision 2 is committed.
    await batches.overtaken(
        database,
        batches.record(Topic.SCORES, scores("A", "X", score=7.0), "h:scores"),
        batches.record(Topic.PROJECTS, changed("X", 2), "h:X:2"),
    )
    queries = ReadModelQueries(reporting_pool)

    versions = await reporting_pool.fetch(
        "SELECT project_key, revision, score, valid_from,"
        " lead(valid_from) OVER (PARTITION BY project_key ORDER BY valid_from) AS valid_to"
        " FROM projects_history WHERE portfolio = $1 ORDER BY project_key, valid_from",
        PORTFOLIO,
    )
    x = [v for v in versions if v["project_key"] == key("X")]
    assert [(v["revision"], v["score"]) for v in x] == [(1, None), (2, None), (2, 7.0)]
    for project in (key("A"), key("X")):
        mine = [v for v in versions if v["project_key"] == project]
        assert mine[-1]["valid_to"] is None
        for earlier, later in itertools.pairwise(mine):
            assert earlier["valid_from"] < earlier["valid_to"] == later["valid_from"]
    for version in x:
        _, items = await queries.projects(
            PORTFOLIO, limit=10, offset=0, as_of=version["valid_from"]
        )
        shown = [i for i in items if i["project_key"] == key("X")]
        assert [(i["revision"], i["score"]) for i in shown] == [
            (version["revision"], version["score"])
        ]


async def test_the_change_marker_moves_with_a_commit_that_began_before_the_last_one(
    reporting_pool: asyncpg.Pool[Any], database: DatabaseSettings
) -> None:
    """A batch that began first and commits last, having written only rows other than the
    overtaking batch's: the dashboard's change marker still moves with its commit."""
    batches = _Batches(reporting_pool)
    await batches.handle([batches.record(Topic.PROJECTS, changed("A"), "m:A:1")])
    await batches.overtaken(
        database,
        batches.record(Topic.SCORES, scores("A", score=3.0), "m:scores"),
        batches.record(Topic.PROJECTS, changed("Z"), "m:Z:1"),
    )
