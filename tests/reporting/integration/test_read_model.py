"""The read model against real Postgres: duplicates and out-of-order events converge on the
state an in-order replay gives."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.reporting.handlers import ReportingHandler
from services.reporting.repository import ReadModelQueries, ReportingUnitOfWork
from shared.consumer_record import Record
from shared.contracts.events import (
    Contribution,
    ProjectChanged,
    ProjectPlanned,
    ProjectsChanged,
    ProjectScored,
    ProjectState,
)
from shared.contracts.inbound import Stage
from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings
from shared.topics import Topic, TopicNames
from tests.conftest import service_url

pytestmark = pytest.mark.integration

NAMES = TopicNames("")
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def _record(topic: Topic, event_id: str, event: Any, offset: int) -> Record:
    key = event.project_key if hasattr(event, "project_key") else event.portfolio
    return Record(
        topic=NAMES(topic),
        partition=0,
        offset=offset,
        key=key.encode(),
        value=event.model_dump_json().encode(),
        headers=(("ce_id", event_id.encode()), ("ce_type", type(event).TYPE.encode())),
        timestamp_ms=0,
    )


def _events() -> list[Record]:
    """Three revisions of a project: the first as a record of its own (as earlier versions of
    intake wrote it), the next two in one record of many projects; three scores and plans."""
    state = ProjectState(name="A", portfolio="retail", source="jira", external_id="A")
    changes = [
        ProjectChanged(
            project_key="retail/jira/A",
            portfolio="retail",
            revision=revision,
            submission_id=f"s{revision}",
            occurred_at=NOW,
            project=state.model_copy(update={"stage": Stage(stage), "name": f"A{revision}"}),
        )
        for revision, stage in enumerate(["idea", "proposal", "approved"], start=1)
    ]
    out = [
        _record(Topic.PROJECTS, "p1", changes[0], 0),
        _record(Topic.PROJECTS, "p2", ProjectsChanged(portfolio="retail", changes=changes[1:]), 1),
    ]
    for version in (1, 2, 3):
        scored = ProjectScored(
            project_key="retail/jira/A",
            portfolio="retail",
            project_revision=version,
            ranking_version=version,
            model="weighted-default",
            model_version=1,
            score=10.0 * version,
            rank=version,
            mandatory=False,
            explanation=[
                Contribution(
                    criterion="risk", raw=2, normalised=0.75, weight=1, contribution=10 * version
                )
            ],
            cause="project_revision",
        )
        out.append(_record(Topic.SCORES, f"s{version}", scored, len(out)))
        planned = ProjectPlanned(
            project_key="retail/jira/A",
            portfolio="retail",
            plan_version=version,
            status="planned",
            start_month=f"2027-0{version}",
            end_month="2027-09",
        )
        out.append(_record(Topic.PLANS, f"c{version}", planned, len(out)))
    return out


async def _apply(database: DatabaseSettings, batches: list[list[Record]]) -> dict[str, Any]:
    pool = await create_pool(
        service_url(database, "reporting"), schema="reporting", application_name="t"
    )
    try:
        handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
        for batch in batches:
            await handler.handle(batch)
        _, items = await ReadModelQueries(pool).projects("retail", limit=10, offset=0)
        assert len(items) == 1
        row = items[0]
        row["explanation"] = json.dumps(row["explanation"])
        row.pop("updated_at")  # when this read model applied it, not what it says
        return row
    finally:
        await pool.close()


async def test_duplicates_and_disorder_converge_on_the_in_order_state(
    database: DatabaseSettings,
) -> None:
    await migrate(database.url, [service_component("reporting")])
    events = _events()
    in_order = await _apply(database, [events])
    assert (in_order["name"], in_order["stage"], in_order["rank"]) == ("A3", "approved", 3)
    assert in_order["start_month"] == "2027-03"

    # The same read model rebuilt from the same events, shuffled and each delivered three
    # times, in small batches.
    admin = await asyncpg.connect(database.url)
    try:
        await admin.execute("TRUNCATE reporting.projects, reporting.inbox")
    finally:
        await admin.close()
    rnd = random.Random(7)
    shuffled = events * 3
    rnd.shuffle(shuffled)
    batches = [shuffled[i : i + 4] for i in range(0, len(shuffled), 4)]
    assert await _apply(database, batches) == in_order
