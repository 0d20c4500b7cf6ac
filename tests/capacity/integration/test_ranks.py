"""Ranks reach capacity two ways: with projects' scores (``ScoresChanged``, or ``ProjectScored``
as earlier versions published them) and as moves of ranks alone (``RankingChanged``). On real
Postgres: moves apply only over older versions, in any order within a batch, and a move never
touches a score."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.capacity.handlers import CapacityHandler
from services.capacity.repository import CapacityUnitOfWork
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.events import (
    ProjectChanged,
    ProjectsChanged,
    ProjectScore,
    ProjectScored,
    ProjectState,
    RankChange,
    RankingChanged,
    ScoresChanged,
)
from shared.topics import Topic, TopicNames
from tests.helpers import consumed, project_scored

pytestmark = pytest.mark.integration

TOPICS = TopicNames("ranks.")
NOW = datetime(2027, 1, 5, tzinfo=UTC)


def record(
    event: ProjectScored | RankingChanged | ScoresChanged, event_id: str, offset: int
) -> Record:
    key = event.project_key if isinstance(event, ProjectScored) else event.portfolio
    message = event_message(
        topic=TOPICS(Topic.SCORES), key=key, event=event, event_id=event_id, source="t", time=NOW
    )
    return consumed(message, offset)


def scored(project: str, version: int, rank: int, score: float) -> ProjectScored:
    return project_scored("ranked", project, ranking_version=version, rank=rank, score=score)


def moved(version: int, **ranks: int | None) -> RankingChanged:
    return RankingChanged(
        portfolio="ranked",
        ranking_version=version,
        ranks=[RankChange(project_key=f"ranked/jira/{p}", rank=r) for p, r in ranks.items()],
    )


async def ranks(pool: asyncpg.Pool[Any]) -> dict[str, tuple[int | None, float, int]]:
    rows = await pool.fetch(
        "SELECT project_key, rank, score, ranking_version FROM ranks WHERE portfolio = 'ranked'"
    )
    return {
        r["project_key"].split("/")[-1]: (r["rank"], r["score"], r["ranking_version"]) for r in rows
    }


async def test_moves_apply_over_older_versions_only_and_keep_scores(
    pool: asyncpg.Pool[Any],
) -> None:
    handler = CapacityHandler(
        uow=lambda: CapacityUnitOfWork(pool), topics=TOPICS, clock=lambda: NOW, plan_start="2027-01"
    )
    await handler.handle(
        [
            record(scored("A", 1, 1, 90.0), "s:A:1", 0),
            record(scored("B", 2, 2, 80.0), "s:B:2", 1),
            record(scored("C", 2, 3, 70.0), "s:C:2", 2),
        ]
    )
    # One batch: C rescored at version 4 to the top, then (as scoring publishes them) the moves
    # it caused at 4; then a stale move of version 3 arriving after them; and D unknown here.
    await handler.handle(
        [
            record(scored("C", 4, 1, 99.0), "s:C:4", 3),
            record(moved(4, A=2, B=3, D=7), "r:4", 4),
            record(moved(3, A=5, C=9), "r:3", 5),
        ]
    )
    assert await ranks(pool) == {
        "A": (2, 90.0, 4),  # moved, score kept
        "B": (3, 80.0, 4),
        "C": (1, 99.0, 4),  # its own score event; the stale move of version 3 did not apply
    }
    # Leaving the ranking is a move to no rank; a redelivered batch changes nothing.
    await handler.handle([record(moved(5, B=None), "r:5", 6)])
    await handler.handle([record(moved(4, A=2, B=3, D=7), "r:4", 4)])
    assert (await ranks(pool))["B"] == (None, 80.0, 5)
    assert (await ranks(pool))["A"] == (2, 90.0, 4)


def scores_changed(version: int, *events: ProjectScored) -> ScoresChanged:
    return ScoresChanged(
        portfolio="ranked",
        ranking_version=version,
        model="weighted-default",
        model_version=1,
        scores=[ProjectScore.model_validate(e.model_dump()) for e in events],
    )


async def test_scores_of_many_projects_in_one_record_apply_like_one_record_each(
    pool: asyncpg.Pool[Any],
) -> None:
    """What scoring publishes (``ScoresChanged``) and what earlier versions published
    (``ProjectScored``, still on the topic after an upgrade) apply by the same version rule."""
    handler = CapacityHandler(
        uow=lambda: CapacityUnitOfWork(pool), topics=TOPICS, clock=lambda: NOW, plan_start="2027-01"
    )
    await handler.handle(
        [
            record(scored("A", 1, 1, 90.0), "s:A:1", 0),
            record(
                scores_changed(3, scored("A", 3, 2, 50.0), scored("B", 3, 1, 95.0)), "sc:3:0", 1
            ),
            # Older than what the record above carries for A: not applied.
            record(scored("A", 2, 1, 60.0), "s:A:2", 2),
        ]
    )
    assert await ranks(pool) == {"A": (2, 50.0, 3), "B": (1, 95.0, 3)}
    await handler.handle(
        [record(scores_changed(2, scored("B", 2, 7, 1.0), scored("C", 2, 3, 70.0)), "sc:2:0", 3)]
    )
    assert await ranks(pool) == {"A": (2, 50.0, 3), "B": (1, 95.0, 3), "C": (3, 70.0, 2)}


def change(project: str, revision: int, name: str) -> ProjectChanged:
    return ProjectChanged(
        project_key=f"ranked/jira/{project}",
        portfolio="ranked",
        revision=revision,
        submission_id=f"{project}-{revision}",
        occurred_at=NOW,
        project=ProjectState(name=name, portfolio="ranked", source="jira", external_id=project),
    )


async def test_project_states_of_many_projects_in_one_record_apply_like_one_record_each(
    pool: asyncpg.Pool[Any],
) -> None:
    """What intake publishes (``ProjectsChanged``, a project possibly more than once) and what
    earlier versions published (``ProjectChanged``) apply by the same revision rule."""
    handler = CapacityHandler(
        uow=lambda: CapacityUnitOfWork(pool), topics=TOPICS, clock=lambda: NOW, plan_start="2027-01"
    )

    def projects_record(event: ProjectChanged | ProjectsChanged, event_id: str, n: int) -> Record:
        key = event.project_key if isinstance(event, ProjectChanged) else event.portfolio
        message = event_message(
            topic=TOPICS(Topic.PROJECTS),
            key=key,
            event=event,
            event_id=event_id,
            source="t",
            time=NOW,
        )
        return consumed(message, n)

    batched = ProjectsChanged(
        portfolio="ranked",
        changes=[change("A", 2, "A2"), change("B", 1, "B1"), change("A", 3, "A3")],
    )
    await handler.handle(
        [
            projects_record(change("A", 1, "A1"), "p:A:1", 0),
            projects_record(batched, "ps:0", 1),
            # Older than what the record above carries for A: not applied.
            projects_record(change("A", 2, "A2 again"), "p:A:2", 2),
        ]
    )
    rows = await pool.fetch(
        "SELECT project_key, revision, state ->> 'name' AS name FROM projects"
        " WHERE portfolio = 'ranked' ORDER BY project_key"
    )
    assert [(r["project_key"], r["revision"], r["name"]) for r in rows] == [
        ("ranked/jira/A", 3, "A3"),
        ("ranked/jira/B", 1, "B1"),
    ]
