"""Rank moves (``RankingChanged``) in the read model on real Postgres: applied over older
versions only, scores and explanations kept, each moved project republished to the warehouse
topic with its new rank, and each move kept in the rank history that ``as_of`` reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.reporting.handlers import ReportingHandler, WarehouseFeed
from services.reporting.repository import ReadModelQueries, ReportingUnitOfWork
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.events import (
    DuplicatesFound,
    PlansChanged,
    PossibleDuplicate,
    ProjectChanged,
    ProjectDuplicates,
    ProjectPlan,
    ProjectPlanned,
    ProjectScore,
    ProjectScored,
    ProjectState,
    RankChange,
    RankingChanged,
    ScoresChanged,
)
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings, role_url
from shared.topics import Topic, TopicNames
from tests.helpers import consumed, project_scored

pytestmark = pytest.mark.integration

NAMES = TopicNames("moves.")
NOW = datetime(2026, 11, 25, tzinfo=UTC)
PORTFOLIO = "moves"


def record(topic: Topic, event: Any, event_id: str, offset: int) -> Record:
    key = getattr(event, "project_key", PORTFOLIO)
    message = event_message(
        topic=NAMES(topic), key=key, event=event, event_id=event_id, source="t", time=NOW
    )
    return consumed(message, offset)


def key(p: str) -> str:
    return f"{PORTFOLIO}/jira/{p}"


def on_clock(
    pool: asyncpg.Pool[Any], clock: list[datetime], **delays: timedelta
) -> tuple[ReportingHandler, WarehouseFeed]:
    """A handler with ``delays`` and a warehouse feed, both on the time in ``clock[0]``."""
    handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: clock[0], **delays)
    return handler, WarehouseFeed(lambda: ReportingUnitOfWork(pool), NAMES, lambda: clock[0])


def changed(p: str) -> ProjectChanged:
    state = ProjectState(name=p, portfolio=PORTFOLIO, source="jira", external_id=p)
    return ProjectChanged(
        project_key=key(p),
        portfolio=PORTFOLIO,
        revision=1,
        submission_id=f"sub-{p}",
        occurred_at=NOW,
        project=state,
    )


def scored(p: str, version: int, rank: int, score: float) -> ProjectScored:
    return project_scored(PORTFOLIO, p, ranking_version=version, rank=rank, score=score)


def moved(version: int, **ranks: int | None) -> RankingChanged:
    return RankingChanged(
        portfolio=PORTFOLIO,
        ranking_version=version,
        ranks=[RankChange(project_key=key(p), rank=r) for p, r in ranks.items()],
    )


@pytest.fixture
async def pool(reporting_pool: asyncpg.Pool[Any]) -> asyncpg.Pool[Any]:
    """Reporting's pool, as its own role, with no rows of this file's portfolio."""
    for table in ("projects", "projects_history", "rank_history"):
        await reporting_pool.execute(f"DELETE FROM {table} WHERE portfolio = $1", PORTFOLIO)
    return reporting_pool


async def test_moves_replace_older_ranks_keep_scores_and_reach_the_warehouse(
    pool: asyncpg.Pool[Any],
) -> None:
    handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("A"), "p:A", 0),
            record(Topic.PROJECTS, changed("B"), "p:B", 1),
            record(Topic.PROJECTS, changed("C"), "p:C", 2),
            record(Topic.SCORES, scored("A", 1, 1, 90.0), "s:A:1", 3),
            record(Topic.SCORES, scored("B", 1, 2, 80.0), "s:B:1", 4),
            record(Topic.SCORES, scored("C", 1, 3, 70.0), "s:C:1", 5),
        ]
    )
    feed = WarehouseFeed(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    assert await feed.publish_due() == 3  # the first batch's three projects, once each
    before = await pool.fetchval("SELECT max(id) FROM outbox")
    # C rescored to the top at version 2 with the moves it caused, then a stale move of an
    # older version arriving late; the move of an unknown project changes nothing.
    await handler.handle(
        [
            record(Topic.SCORES, scored("C", 2, 1, 99.0), "s:C:2", 6),
            record(Topic.SCORES, moved(2, A=2, B=3, Z=4), "r:2", 7),
            record(Topic.SCORES, moved(1, A=7, C=8), "r:1", 8),
        ]
    )
    rows = {
        r["project_key"]: (r["rank"], r["score"], r["ranking_version"], r["explanation"])
        for r in await pool.fetch(
            "SELECT project_key, rank, score, ranking_version, explanation::text"
            " FROM projects WHERE portfolio = $1",
            PORTFOLIO,
        )
    }
    assert {k: v[:3] for k, v in rows.items()} == {
        key("A"): (2, 90.0, 2),
        key("B"): (3, 80.0, 2),
        key("C"): (1, 99.0, 2),
    }
    assert json.loads(rows[key("A")][3])[0]["contribution"] == 90.0

    # Three projects changed (Z is unknown here), however many events touched them.
    assert await feed.publish_due() == 4  # A, B, C and the unknown Z, which has no row
    assert await feed.publish_due() == 0
    published = await pool.fetch(
        "SELECT key, value FROM outbox WHERE id > $1 AND topic = $2",
        before,
        NAMES(Topic.PORTFOLIO_PROJECTS),
    )
    assert len(published) == 3
    latest = {bytes(r["key"]).decode(): json.loads(r["value"]) for r in published}
    assert {k: (v["rank"], v["score"]) for k, v in latest.items()} == {
        key("A"): (2, 90.0),
        key("B"): (3, 80.0),
        key("C"): (1, 99.0),
    }


async def test_scores_and_plans_of_many_projects_a_record_reach_the_read_model_and_warehouse(
    pool: asyncpg.Pool[Any],
) -> None:
    """Scoring publishes a pass's scores many projects a record (``ScoresChanged``), capacity a
    replan's placements (``PlansChanged``); each entry applies as the project's own event of
    its version would, beside those earlier versions wrote (``ProjectScored``,
    ``ProjectPlanned``)."""
    handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    entries = [scored("A", 2, 2, 50.0), scored("B", 2, 1, 95.0)]
    many = ScoresChanged(
        portfolio=PORTFOLIO,
        ranking_version=2,
        model="weighted-default",
        model_version=1,
        scores=[ProjectScore.model_validate(e.model_dump()) for e in entries],
    )
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("A"), "m:p:A", 0),
            record(Topic.PROJECTS, changed("B"), "m:p:B", 1),
            record(Topic.SCORES, scored("A", 1, 1, 90.0), "m:s:A:1", 2),
            record(Topic.SCORES, many, "m:sc:2:0", 3),
            # An older version after it (a late record of an earlier pass) does not apply.
            record(Topic.SCORES, scored("B", 1, 3, 10.0), "m:s:B:1", 4),
            record(
                Topic.PLANS,
                PlansChanged(
                    portfolio=PORTFOLIO,
                    plan_version=3,
                    plans=[
                        ProjectPlan(project_key=key("A"), status="planned", start_month="2027-02"),
                        ProjectPlan(project_key=key("B"), status="excluded"),
                    ],
                ),
                "m:pl:3:0",
                5,
            ),
            record(
                Topic.PLANS,
                ProjectPlanned(
                    project_key=key("B"), portfolio=PORTFOLIO, plan_version=2, status="planned"
                ),
                "m:pl:B:2",
                6,
            ),
        ]
    )
    plans = await pool.fetch(
        "SELECT project_key, plan_status, start_month, plan_version FROM projects"
        " WHERE portfolio = $1",
        PORTFOLIO,
    )
    assert {r["project_key"]: tuple(r)[1:] for r in plans} == {
        key("A"): ("planned", "2027-02", 3),
        key("B"): ("excluded", None, 3),
    }
    rows = await pool.fetch(
        "SELECT project_key, rank, score, ranking_version, explanation::text"
        " FROM projects WHERE portfolio = $1",
        PORTFOLIO,
    )
    assert {r["project_key"]: (r["rank"], r["score"], r["ranking_version"]) for r in rows} == {
        key("A"): (2, 50.0, 2),
        key("B"): (1, 95.0, 2),
    }
    assert {json.loads(r["explanation"])[0]["contribution"] for r in rows} == {50.0, 95.0}
    feed = WarehouseFeed(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    assert await feed.publish_due() == 2


# docs/reporting.md's "as of a past instant" for BI tools, for one portfolio.
BI_AS_OF = """
SELECT h.project_key,
       CASE WHEN m.ranking_version > h.ranking_version THEN m.rank ELSE h.rank END AS rank_then
FROM reporting.v_projects_history h
LEFT JOIN LATERAL (
    SELECT rank, ranking_version FROM reporting.v_rank_history r
    WHERE r.project_key = h.project_key AND r.valid_from <= $2
    ORDER BY r.ranking_version DESC LIMIT 1
) m ON true
WHERE h.portfolio = $1 AND h.valid_from <= $2 AND (h.valid_to IS NULL OR h.valid_to > $2)
"""


async def test_a_move_is_a_rank_history_row_and_as_of_reads_ranks_through_it(
    pool: asyncpg.Pool[Any], database: DatabaseSettings
) -> None:
    handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    queries = ReadModelQueries(pool)

    async def ranks(as_of: datetime | None) -> dict[str, int]:
        _, items = await queries.projects(PORTFOLIO, limit=10, offset=0, as_of=as_of)
        return {i["project_key"]: i["rank"] for i in items}

    await handler.handle(
        [
            record(Topic.PROJECTS, changed("A"), "h:p:A", 0),
            record(Topic.PROJECTS, changed("B"), "h:p:B", 1),
            record(Topic.SCORES, scored("A", 1, 1, 90.0), "h:s:A:1", 2),
            record(Topic.SCORES, scored("B", 1, 2, 80.0), "h:s:B:1", 3),
        ]
    )
    first = await pool.fetchval("SELECT clock_timestamp()")
    # C arrives at the top: A and B move, as a ranking of version 2.
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("C"), "h:p:C", 4),
            record(Topic.SCORES, scored("C", 2, 1, 99.0), "h:s:C:2", 5),
            record(Topic.SCORES, moved(2, A=2, B=3), "h:r:2", 6),
        ]
    )
    second = await pool.fetchval("SELECT clock_timestamp()")
    # A moves back up at version 3.
    await handler.handle([record(Topic.SCORES, moved(3, A=1, C=2), "h:r:3", 7)])

    assert await ranks(first) == {key("A"): 1, key("B"): 2}
    assert await ranks(second) == {key("A"): 2, key("B"): 3, key("C"): 1}
    now = {key("A"): 1, key("B"): 3, key("C"): 2}
    assert await ranks(None) == now
    assert await ranks(datetime.now(UTC)) == now
    one = await queries.project(key("A"), as_of=second)
    assert one is not None
    assert one["rank"] == 2
    # The same through the BI role's views, with the query docs/reporting.md gives.
    bi = await asyncpg.connect(role_url(database.url, "pmo_bi"))
    try:
        then = await bi.fetch(BI_AS_OF, PORTFOLIO, second)
    finally:
        await bi.close()
    assert {r["project_key"]: r["rank_then"] for r in then} == await ranks(second)
    # A's moves added no version of its row: its one version is its score's.
    versions = await pool.fetchval(
        "SELECT count(*) FROM projects_history WHERE project_key = $1", key("A")
    )
    assert versions == 1
    moves = await pool.fetch(
        "SELECT project_key, ranking_version, rank FROM rank_history WHERE portfolio = $1"
        " ORDER BY ranking_version, project_key",
        PORTFOLIO,
    )
    assert [tuple(m) for m in moves] == [
        (key("A"), 2, 2),
        (key("B"), 2, 3),
        (key("A"), 3, 1),
        (key("C"), 3, 2),
    ]


async def test_the_history_holds_every_column_of_projects(database: DatabaseSettings) -> None:
    """The history trigger copies every column of a written row and ``projects_as_of`` returns
    history rows: a column added to ``projects`` and not to ``projects_history`` fails this.
    The columns added since ``valid_from`` follow it (migration 0014; ``valid_to``, once
    between them, is read from the next version since migration 0015)."""
    await migrate(database.url, [service_component("reporting")])
    conn = await asyncpg.connect(database.url)
    try:

        async def columns_of(table: str) -> list[str]:
            rows = await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'reporting' AND table_name = $1 ORDER BY ordinal_position",
                table,
            )
            return [r["column_name"] for r in rows]

        projects = await columns_of("projects")
        later = projects[projects.index("possible_duplicates") + 1 :]
        assert later == ["duplicates_revision"]
        history = await columns_of("projects_history")
        assert history == [*projects[: -len(later)], "valid_from", *later]
    finally:
        await conn.close()


async def test_a_version_copies_every_column_of_the_row(pool: asyncpg.Pool[Any]) -> None:
    """A project with every part written (its change, score, plan and possible duplicates):
    its open version in the history, and the row ``projects_as_of`` gives for now, hold what
    the row holds, column for column (the trigger names the columns it copies: one left out
    would be empty in the version)."""
    handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    found = DuplicatesFound(
        portfolio=PORTFOLIO,
        projects=[
            ProjectDuplicates(
                project_key=key("A"),
                revision=1,
                possible_duplicates=[
                    PossibleDuplicate(
                        project_key=key("B"), external_id="B", name="B", similarity=0.9
                    )
                ],
            )
        ],
    )
    planned = ProjectPlanned(
        project_key=key("A"), portfolio=PORTFOLIO, plan_version=1, status="planned"
    )
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("A"), "c:p:A", 0),
            record(Topic.SCORES, scored("A", 1, 1, 90.0), "c:s:A", 1),
            record(Topic.PLANS, planned, "c:l:A", 2),
            record(Topic.DUPLICATES, found, "c:d:A", 3),
        ]
    )
    row = await pool.fetchrow(
        "SELECT to_jsonb(p) AS j FROM projects p WHERE project_key = $1", key("A")
    )
    version = await pool.fetchrow(
        "SELECT to_jsonb(h) - 'valid_from' AS j FROM projects_history h"
        " WHERE project_key = $1 ORDER BY valid_from DESC LIMIT 1",
        key("A"),
    )
    as_of = await pool.fetchrow(
        "SELECT to_jsonb(h) - 'valid_from' AS j FROM projects_as_of(now()) h"
        " WHERE project_key = $1",
        key("A"),
    )
    assert json.loads(version["j"]) == json.loads(row["j"])
    assert json.loads(as_of["j"]) == json.loads(row["j"])
    assert json.loads(row["j"])["duplicates_revision"] == 1
    assert json.loads(row["j"])["possible_duplicates"][0]["external_id"] == "B"


async def test_writes_after_a_move_in_the_same_batch_still_make_versions(
    pool: asyncpg.Pool[Any],
) -> None:
    """The rank move switches versions off for its own statement only (migration 0010): the
    plan applied after it in the same batch makes a version, and each project's version holds
    the batch's last word on it, the move's rank included."""
    handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("A"), "w:p:A", 0),
            record(Topic.PROJECTS, changed("B"), "w:p:B", 1),
            record(Topic.SCORES, scored("A", 1, 1, 90.0), "w:s:A:1", 2),
            record(Topic.SCORES, scored("B", 1, 2, 80.0), "w:s:B:1", 3),
        ]
    )
    planned = ProjectPlanned(
        project_key=key("A"), portfolio=PORTFOLIO, plan_version=1, status="planned"
    )
    await handler.handle(
        [
            record(Topic.SCORES, moved(2, A=2, B=1), "w:r:2", 4),
            record(Topic.PLANS, planned, "w:pl:A:1", 5),
        ]
    )
    versions = await pool.fetch(
        "SELECT project_key, rank, plan_status,"
        " lead(valid_from) OVER (PARTITION BY project_key ORDER BY valid_from) IS NULL AS open"
        " FROM projects_history WHERE portfolio = $1 ORDER BY project_key, valid_from",
        PORTFOLIO,
    )
    assert [tuple(v) for v in versions] == [
        (key("A"), 1, None, False),
        (key("A"), 2, "planned", True),  # the plan's version, after the move
        (key("B"), 2, None, True),  # moved only: no new version, a rank_history row
    ]
    assert (
        await pool.fetchval("SELECT count(*) FROM rank_history WHERE portfolio = $1", PORTFOLIO)
        == 2
    )
    setting = await pool.fetchval("SELECT current_setting('pmo.moving_ranks', true)")
    assert setting in (None, "", "off")


async def test_a_project_only_moved_reaches_the_warehouse_after_the_rank_delay(
    pool: asyncpg.Pool[Any],
) -> None:
    clock = [NOW]
    handler, feed = on_clock(pool, clock, rank_delay=timedelta(seconds=5))
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("A"), "d:p:A", 0),
            record(Topic.SCORES, scored("A", 1, 1, 90.0), "d:s:A:1", 1),
        ]
    )
    assert await feed.publish_due() == 1
    # B arrives on top: its own record is due at once, A's move after the delay.
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("B"), "d:p:B", 2),
            record(Topic.SCORES, scored("B", 2, 1, 95.0), "d:s:B:2", 3),
            record(Topic.SCORES, moved(2, A=2), "d:r:2", 4),
        ]
    )
    before = await pool.fetchval("SELECT max(id) FROM outbox")
    assert await feed.publish_due() == 1
    clock[0] = NOW + timedelta(seconds=4)
    assert await feed.publish_due() == 0
    clock[0] = NOW + timedelta(seconds=5)
    assert await feed.publish_due() == 1
    published = await pool.fetch(
        "SELECT key, value FROM outbox WHERE id > $1 AND topic = $2 ORDER BY id",
        before,
        NAMES(Topic.PORTFOLIO_PROJECTS),
    )
    assert [(bytes(r["key"]).decode(), json.loads(r["value"])["rank"]) for r in published] == [
        (key("B"), 1),
        (key("A"), 2),
    ]
    # A mark that is due keeps its time when a later move asks for a later one.
    await handler.handle([record(Topic.PROJECTS, changed("C"), "d:p:C", 5)])
    await handler.handle([record(Topic.SCORES, moved(3, C=3), "d:r:3", 6)])
    assert await feed.publish_due() == 1


async def test_a_change_and_what_follows_it_within_the_change_delay_are_one_record(
    pool: asyncpg.Pool[Any],
) -> None:
    """A new project's state, then its score a moment later: with a change delay, the
    warehouse gets one record carrying both, due at the first change's time plus the delay
    (a later change does not push it back)."""
    clock = [NOW]
    handler, feed = on_clock(
        pool, clock, rank_delay=timedelta(seconds=5), change_delay=timedelta(seconds=1)
    )
    before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    await handler.handle([record(Topic.PROJECTS, changed("D"), "c:p:D", 0)])
    assert await feed.publish_due() == 0  # not due yet
    clock[0] = NOW + timedelta(milliseconds=600)
    await handler.handle([record(Topic.SCORES, scored("D", 1, 1, 70.0), "c:s:D:1", 1)])
    assert await feed.publish_due() == 0
    clock[0] = NOW + timedelta(seconds=1)  # the first change's due time, not the score's
    assert await feed.publish_due() == 1
    published = await pool.fetch(
        "SELECT key, value FROM outbox WHERE id > $1 AND topic = $2 ORDER BY id",
        before,
        NAMES(Topic.PORTFOLIO_PROJECTS),
    )
    assert [(bytes(r["key"]).decode(), json.loads(r["value"])["score"]) for r in published] == [
        (key("D"), 70.0)
    ]

    async def moved_and_changed(by: ReportingHandler, version: int, score: float) -> Any:
        """D's due time after ``by`` applies a batch of D's new score and a move of D."""
        change = scored("D", version, 2, score)
        await by.handle(
            [
                record(Topic.SCORES, change, f"c:s:D:{version}", version - 1),
                record(Topic.SCORES, moved(version + 1, D=1), f"c:r:{version + 1}", version),
            ]
        )
        return await pool.fetchval(
            "SELECT due_at FROM warehouse_pending WHERE project_key = $1", key("D")
        )

    # A move and a change in one batch: the change's (earlier) time wins.
    clock[0] = NOW + timedelta(seconds=2)
    assert await moved_and_changed(handler, 3, 60.0) == NOW + timedelta(seconds=3)
    # And where moves may wait less than changes, a project both moved and changed is due by
    # the earlier of the two.
    eager = ReportingHandler(
        lambda: ReportingUnitOfWork(pool),
        NAMES,
        lambda: clock[0],
        rank_delay=timedelta(0),
        change_delay=timedelta(seconds=1),
    )
    clock[0] = NOW + timedelta(seconds=10)
    assert await feed.publish_due() == 1  # D's mark above
    assert await moved_and_changed(eager, 5, 55.0) == NOW + timedelta(seconds=10)


async def test_a_new_projects_record_waits_for_its_score_and_plan(
    pool: asyncpg.Pool[Any],
) -> None:
    """A project without a score or a plan yet is due after the derived wait, not the change
    delay (nor the rank delay, when it moves); the batch that brings the last of them makes it
    due within the change delay, so the warehouse gets one record with all three. One whose
    plan never comes goes out at the derived wait with what it has; one with both, revised,
    within the change delay; one whose change arrives after its score and plan (another lane)
    waits for its change, then within the change delay too."""
    clock = [NOW]
    handler, feed = on_clock(
        pool,
        clock,
        rank_delay=timedelta(seconds=5),
        change_delay=timedelta(seconds=1),
        derived_wait=timedelta(seconds=30),
    )

    def at(seconds: float) -> datetime:
        return NOW + timedelta(seconds=seconds)

    async def due(p: str) -> datetime | None:
        value: datetime | None = await pool.fetchval(
            "SELECT due_at FROM warehouse_pending WHERE project_key = $1", key(p)
        )
        return value

    def plan(p: str, version: int) -> ProjectPlanned:
        return ProjectPlanned(
            project_key=key(p), portfolio=PORTFOLIO, plan_version=version, status="planned"
        )

    before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("N"), "n:p:N", 0),
            record(Topic.PROJECTS, changed("L"), "n:p:L", 1),
        ]
    )
    assert (await due("N"), await due("L")) == (at(30), at(30))
    clock[0] = at(4)  # scored: still no plan
    await handler.handle(
        [
            record(Topic.SCORES, scored("N", 1, 1, 80.0), "n:s:N", 2),
            record(Topic.SCORES, scored("L", 2, 2, 70.0), "n:s:L", 3),
        ]
    )
    assert (await due("N"), await due("L")) == (at(30), at(30))
    clock[0] = at(9)  # N planned: due within the change delay; L moved, still without a plan
    await handler.handle(
        [
            record(Topic.PLANS, plan("N", 1), "n:pl:N", 4),
            record(Topic.SCORES, moved(3, L=1), "n:r:L", 100),
        ]
    )
    assert (await due("N"), await due("L")) == (at(10), at(30))
    assert await feed.publish_due() == 0
    clock[0] = at(10)
    assert await feed.publish_due() == 1
    # N revised, with its score and plan in the row: within the change delay.
    clock[0] = at(12)
    revised = changed("N").model_copy(update={"revision": 2})
    await handler.handle([record(Topic.PROJECTS, revised, "n:p:N:2", 5)])
    assert await due("N") == at(13)
    # O's score and plan before its change (they come on another consumer): the change finds
    # them in the row.
    await handler.handle(
        [
            record(Topic.SCORES, scored("O", 3, 3, 60.0), "n:s:O", 6),
            record(Topic.PLANS, plan("O", 2), "n:pl:O", 7),
        ]
    )
    assert await due("O") == at(42)  # its own data not here yet
    await handler.handle([record(Topic.PROJECTS, changed("O"), "n:p:O", 8)])
    assert await due("O") == at(13)
    clock[0] = at(13)
    assert await feed.publish_due() == 2
    clock[0] = at(29)
    assert await feed.publish_due() == 0
    clock[0] = at(30)  # L's plan never came: out with what it has
    assert await feed.publish_due() == 1
    published = await pool.fetch(
        "SELECT key, value FROM outbox WHERE id > $1 AND topic = $2 ORDER BY id",
        before,
        NAMES(Topic.PORTFOLIO_PROJECTS),
    )
    records = [
        (bytes(r["key"]).decode()[len(key("")) :], json.loads(r["value"])) for r in published
    ]
    assert [(p, v["revision"], v["score"], v["plan_status"]) for p, v in records] == [
        ("N", 1, 80.0, "planned"),
        ("N", 2, 80.0, "planned"),
        ("O", 1, 60.0, "planned"),
        ("L", 1, 70.0, None),
    ]


async def test_a_project_marked_again_while_its_record_is_built_stays_marked(
    pool: asyncpg.Pool[Any],
) -> None:
    """The publisher reads marks and builds records outside the transaction that clears them:
    a batch marking a project in between keeps its mark, and the next pass publishes the
    project's newest state."""
    handler = ReportingHandler(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    feed = WarehouseFeed(lambda: ReportingUnitOfWork(pool), NAMES, lambda: NOW)
    await handler.handle(
        [
            record(Topic.PROJECTS, changed("A"), "m:p:A", 0),
            record(Topic.PROJECTS, changed("B"), "m:p:B", 1),
        ]
    )
    async with ReportingUnitOfWork(pool) as uow:
        marks = await uow.read_model.claim_warehouse_marks(NOW, 100)
    assert sorted(k for k, _ in marks) == [key("A"), key("B")]
    # Meanwhile A is scored (a new mark), without waiting for anything.
    await handler.handle([record(Topic.SCORES, scored("A", 1, 1, 90.0), "m:s:A:1", 2)])
    async with ReportingUnitOfWork(pool) as uow:
        assert await uow.read_model.clear_warehouse_marks(marks) == {key("B")}
    before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    assert await feed.publish_due() == 1
    (row,) = await pool.fetch(
        "SELECT key, value FROM outbox WHERE id > $1 AND topic = $2",
        before,
        NAMES(Topic.PORTFOLIO_PROJECTS),
    )
    assert bytes(row["key"]).decode() == key("A")
    assert json.loads(row["value"])["score"] == 90.0


async def test_a_mark_not_yet_claimed_is_rewritten_only_to_be_due_earlier(
    pool: asyncpg.Pool[Any],
) -> None:
    """A project marked by batch after batch keeps one mark row, untouched, until the publisher
    claims it, unless a later mark is due earlier; once claimed, the next mark renumbers it."""
    clock = [NOW]
    handler = ReportingHandler(
        lambda: ReportingUnitOfWork(pool), NAMES, lambda: clock[0], rank_delay=timedelta(seconds=5)
    )

    async def mark_of(p: str) -> tuple[int, datetime, bool]:
        row = await pool.fetchrow(
            "SELECT mark, due_at, claimed FROM warehouse_pending WHERE project_key = $1", key(p)
        )
        assert row is not None
        return row["mark"], row["due_at"], row["claimed"]

    await handler.handle([record(Topic.SCORES, moved(2, A=2), "u:r:2", 0)])
    first = await mark_of("A")
    assert first[1:] == (NOW + timedelta(seconds=5), False)
    # Moved again a second later: due later than the mark it has, so the row stays as it is.
    clock[0] = NOW + timedelta(seconds=1)
    await handler.handle([record(Topic.SCORES, moved(3, A=3), "u:r:3", 1)])
    assert await mark_of("A") == first
    # Its own data changes: due at once, earlier than the mark it has.
    await handler.handle([record(Topic.PROJECTS, changed("A"), "u:p:A", 2)])
    second = await mark_of("A")
    assert second[0] != first[0]
    assert second[1:] == (clock[0], False)
    # Claimed by the publisher: the next mark renumbers it and keeps the earlier due time (the
    # record being built may miss the move; the data change before it must not wait 5 s).
    async with ReportingUnitOfWork(pool) as uow:
        assert await uow.read_model.claim_warehouse_marks(clock[0], 100) == [(key("A"), second[0])]
    assert (await mark_of("A"))[2] is True
    await handler.handle([record(Topic.SCORES, moved(4, A=4), "u:r:4", 3)])
    third = await mark_of("A")
    assert third[0] not in (first[0], second[0])
    assert third[1:] == (clock[0], False)
    async with ReportingUnitOfWork(pool) as uow:
        assert await uow.read_model.clear_warehouse_marks([(key("A"), second[0])]) == set()
