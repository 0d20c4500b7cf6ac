"""A reporting read model with something in every table, built the way reporting builds it:
events through its own handler, as its own database role."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from services.reporting.handlers import ReportingHandler
from services.reporting.repository import ReportingUnitOfWork
from shared import deadletter
from shared.consumer_record import Record
from shared.contracts.capacity import (
    Cell,
    ConflictInfo,
    PortfolioPlanned,
    ScenarioResult,
    SkillGapInfo,
)
from shared.contracts.events import (
    Contribution,
    Deferral,
    ProjectChanged,
    ProjectPlanned,
    ProjectScored,
    ProjectState,
)
from shared.contracts.inbound import Stage
from shared.contracts.scoring import ScoringAudit
from shared.db import create_pool
from shared.settings import DatabaseSettings, role_url
from shared.topics import Topic, TopicNames

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
# Stored text that must come back as text, never be interpreted (SQL, CSV, HTML).
HOSTILE_NAMES = [
    "'; DROP TABLE reporting.projects; --",
    '=HYPERLINK("http://example.invalid","x")',
    "<script>alert(1)</script>",
    "Zürich 漢字 🚀 ‮override",
    'comma, "quote" and\nnewline',
]
PENDING_SCENARIO = "00000000-0000-4000-8000-000000000001"
DONE_SCENARIO = "00000000-0000-4000-8000-000000000002"


def _record(names: TopicNames, topic: Topic, key: str, event: BaseModel, offset: int) -> Record:
    return Record(
        topic=names(topic),
        partition=0,
        offset=offset,
        key=key.encode(),
        value=event.model_dump_json().encode(),
        headers=(("ce_id", f"seed:{topic.value}:{offset}".encode()),),
        timestamp_ms=0,
    )


def events(names: TopicNames, portfolios: dict[str, int]) -> list[Record]:
    out: list[Record] = []

    def add(topic: Topic, key: str, event: BaseModel) -> None:
        out.append(_record(names, topic, key, event, len(out)))

    stages = list(Stage)
    for portfolio, count in portfolios.items():
        for i in range(count):
            external_id = f"P{i:03d}"
            key = f"{portfolio}/jira/{external_id}"
            name = HOSTILE_NAMES[i] if i < len(HOSTILE_NAMES) else f"Project {i}"
            state = ProjectState(
                name=name,
                portfolio=portfolio,
                source="jira",
                external_id=external_id,
                stage=stages[i % len(stages)],
                program=f"Program {i % 3}",
                value=1e6 * (i + 1),
                cost=2e5 * (i + 1),
                currency="EUR",
                risk=1 + i % 5,
            )
            add(
                Topic.PROJECTS,
                key,
                ProjectChanged(
                    project_key=key,
                    portfolio=portfolio,
                    revision=1,
                    submission_id=str(uuid.uuid4()),
                    occurred_at=NOW,
                    project=state,
                ),
            )
            add(
                Topic.SCORES,
                key,
                ProjectScored(
                    project_key=key,
                    portfolio=portfolio,
                    project_revision=1,
                    ranking_version=1,
                    model="weighted-default",
                    model_version=0,
                    score=100.0 - i,
                    rank=i + 1,
                    mandatory=i == 0,
                    explanation=[
                        Contribution(
                            criterion="value", raw=1e6, normalised=0.5, weight=1, contribution=50
                        )
                    ],
                    cause="project_revision",
                ),
            )
            deferred = i % 4 == 3
            add(
                Topic.PLANS,
                key,
                ProjectPlanned(
                    project_key=key,
                    portfolio=portfolio,
                    plan_version=1,
                    status="deferred" if deferred else "planned",
                    start_month=None if deferred else "2027-01",
                    end_month=None if deferred else "2027-06",
                    deferral=Deferral(
                        code="capacity",
                        detail="backend is full",
                        role="backend",
                        month="2027-01",
                        shortfall_fte=0.5,
                    )
                    if deferred
                    else None,
                ),
            )
        add(
            Topic.PLAN_SUMMARIES,
            portfolio,
            PortfolioPlanned(
                portfolio=portfolio,
                plan_version=1,
                horizon_start="2027-01",
                horizon_months=3,
                planned_at=NOW,
                utilisation=[
                    Cell(role=r, month=f"2027-0{m}", capacity=2.0, demand=1.5 * m)
                    for r in ("backend", "qa")
                    for m in (1, 2, 3)
                ],
                conflicts=[
                    ConflictInfo(
                        role="backend",
                        month="2027-02",
                        demand=3.0,
                        capacity=2.0,
                        projects=[f"{portfolio}/jira/P000"],
                        suggestion="defer P000",
                    )
                ],
                skill_gaps=[
                    SkillGapInfo(
                        role="qa",
                        month="2027-03",
                        demand=4.5,
                        capacity=2.0,
                        gap=2.5,
                        uncovered=False,
                    )
                ],
            ),
        )
        for n in range(3):
            add(
                Topic.SCORING_AUDIT,
                portfolio,
                ScoringAudit(
                    command_id=str(uuid.uuid4()),
                    portfolio=portfolio,
                    action="pin",
                    author="analyst@example.com",
                    at=NOW + timedelta(minutes=n),
                    outcome="applied",
                    detail={"project_key": f"{portfolio}/jira/P001", "rank": 1},
                    comment="seeded",
                ),
            )
    add(
        Topic.SCENARIOS,
        next(iter(portfolios)),
        ScenarioResult(
            request_id=DONE_SCENARIO,
            portfolio=next(iter(portfolios)),
            kind="whatif",
            name="what-if",
            author="admin",
            computed_at=NOW,
            started=0,
            deferred=0,
            moved=0,
            projects=[],
            utilisation=[],
        ),
    )
    # Dead letters from intake: the funnel counts them as refused submissions.
    for n, portfolio in enumerate(portfolios):
        out.append(
            Record(
                topic=names(Topic.DEAD_LETTERS),
                partition=0,
                offset=len(out),
                key=f"{portfolio}/jira/BAD{n}".encode(),
                value=b"{}",
                headers=(
                    ("ce_id", f"dlq:intake:seed:{n}".encode()),
                    (deadletter.CONSUMER, b"intake"),
                    (deadletter.REASONS, b'[{"path": "", "code": "x", "message": "y"}]'),
                ),
                timestamp_ms=0,
            )
        )
    return out


async def seed_reporting(
    database: DatabaseSettings, names: TopicNames, portfolios: dict[str, int]
) -> None:
    pool = await create_pool(
        role_url(database.url, "pmo_reporting"), schema="reporting", application_name="seed"
    )
    try:
        handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), names, lambda: NOW)
        await handler.handle(events(names, portfolios))
        async with ReportingUnitOfWork(pool) as uow:
            await uow.read_model.add_scenario_request(
                PENDING_SCENARIO, next(iter(portfolios)), "whatif", "admin"
            )
    finally:
        await pool.close()


async def fingerprint(conn: Any, schema: str) -> dict[str, tuple[int, str]]:
    """Row count and content digest of every table of ``schema``."""
    tables = [
        r["relname"]
        for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            schema,
        )
    ]
    out = {}
    for table in tables:
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            f' AS digest FROM "{schema}"."{table}" t'
        )
        out[table] = (row["n"], row["digest"])
    return out
