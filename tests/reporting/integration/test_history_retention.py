"""The history's retention on real Postgres: a sweep deletes what no instant from its cutoff on
reads, every such instant reads as before (projects, ranks, plan summaries, through the API's
own queries), an instant before the cutoff no longer does, and the API refuses one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from services.reporting.api import create_api
from services.reporting.app import build
from services.reporting.dashboard import dashboard_router
from services.reporting.reach import SWEPT
from services.reporting.repository import (
    BUILD_LOCK,
    RANK_MOVES_BY_TIME,
    HistoryPurge,
    ProjectFilter,
    ReadModelQueries,
    ReadModelWriter,
)
from services.reporting.retention import SKEW, HistoryRetention, Swept
from services.reporting.settings import ReportingSettings
from shared.contracts.capacity import Cell, PortfolioPlanned
from shared.contracts.events import RankChange
from shared.settings import DatabaseSettings, KafkaSettings, role_url
from tests.helpers import eventually, project_changed, project_scored

pytestmark = pytest.mark.integration

PORTFOLIO = "kept"
OTHER = "other"
PROJECTS = ("P1", "P2", "P3")
TOKEN = "retention-token-1234"
RETENTION = timedelta(days=30)


def moves(version: int, *order: str) -> list[tuple[int, RankChange]]:
    return [
        (version, RankChange(project_key=f"{PORTFOLIO}/jira/{p}", rank=rank))
        for rank, p in enumerate(order, 1)
    ]


def summary(version: int, portfolio: str = PORTFOLIO) -> PortfolioPlanned:
    return PortfolioPlanned(
        portfolio=portfolio,
        plan_version=version,
        horizon_start="2027-01",
        horizon_months=1,
        planned_at=datetime(2026, 12, 1, tzinfo=UTC),
        utilisation=[Cell(role="backend", month="2027-01", capacity=2.0, demand=float(version))],
        conflicts=[],
        skill_gaps=[],
    )


async def step(conn: asyncpg.Connection[Any], revisions: dict[str, int], version: int) -> datetime:
    """One transaction of changes: new revisions of some projects, a re-ranking (version
    ``version`` > 1) or the first scores, a plan summary, and one of another portfolio with
    higher plan versions; returns the instant after it."""
    async with conn.transaction():
        writer = ReadModelWriter(conn)
        await writer.apply_projects(
            [project_changed(PORTFOLIO, p, r) for p, r in revisions.items()]
        )
        if version == 1:
            await writer.apply_scores(
                [
                    project_scored(PORTFOLIO, p, ranking_version=1, rank=rank, score=10.0 * rank)
                    for rank, p in enumerate(PROJECTS, 1)
                ]
            )
        else:
            order = PROJECTS[version % 3 :] + PROJECTS[: version % 3]
            await writer.move_ranks(moves(version, *order))
        await writer.add_summaries([summary(version), summary(version + 100, OTHER)])
    instant: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return instant


def at_cutoff(
    pool: asyncpg.Pool[Any],
    cutoff: datetime,
    kind: type[HistoryRetention] = HistoryRetention,
    **options: int,
) -> HistoryRetention:
    """A retention of ``kind`` whose cutoff is ``cutoff``."""
    clock = lambda: cutoff + RETENTION + SKEW  # noqa: E731
    return kind(lambda: pool, RETENTION, clock, interval=3600, **options)


async def read(queries: ReadModelQueries, at: datetime | None) -> tuple[Any, ...]:
    """The portfolio as the API reads it at ``at``: its projects (revision, rank, name) and the
    plan summary in force."""
    total, items = await queries.projects(
        PORTFOLIO, limit=100, offset=0, as_of=at, filters=ProjectFilter()
    )
    found = await queries.summary(PORTFOLIO, at)
    return (
        total,
        sorted((i["project_key"], i["revision"], i["rank"], i["name"]) for i in items),
        None if found is None else (found["plan_version"], found["utilisation"]),
    )


async def counts(pool: asyncpg.Pool[Any]) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM projects_history) AS versions,"
        " (SELECT count(*) FROM rank_history) AS moves,"
        " (SELECT count(*) FROM plan_summaries) AS summaries"
    )
    assert row is not None
    return row["versions"], row["moves"], row["summaries"]


async def test_a_sweep_keeps_every_instant_from_its_cutoff_as_it_was(
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    """Four transactions of changes, and a move of P3 in a newer ranking (10) dated at the first
    instant (a move is dated by its transaction's start, and transactions commit in another
    order than they start). The cutoff is the instant of P1's third version. Deleted are the
    rows recorded by the cutoff that a later one of theirs, also recorded by then, replaces:
    P1's first two versions and P2's first; each project's move of ranking 2, and P3's of
    ranking 3 (its newest ranking by then is 10, the latest by time 3); the first two plan
    summaries of each portfolio. Nothing else: the portfolio reads the same at the cutoff and
    after the fourth transaction, through the API's queries and BI's history views; the first
    instant is refused, and without the recorded cutoff would no longer read the same. A
    statement deletes at most its limit; the sweep goes through the projects two at a time and
    deletes a row of each table a transaction, and a second sweep finds nothing left to
    delete."""
    async with reporting_pool.acquire() as conn:
        first = await step(conn, {"P1": 1, "P2": 1, "P3": 1}, 1)
        await step(conn, {"P1": 2, "P2": 2}, 2)
        await step(conn, {"P1": 3}, 3)
        last = await step(conn, {"P2": 3}, 4)
        await conn.execute(
            "INSERT INTO rank_history (project_key, portfolio, ranking_version, rank, valid_from)"
            " VALUES ($1, $2, 10, 7, $3)",
            f"{PORTFOLIO}/jira/P3",
            PORTFOLIO,
            first,
        )
        cutoff: datetime = await conn.fetchval(
            "SELECT max(valid_from) FROM projects_history WHERE project_key = $1",
            f"{PORTFOLIO}/jira/P1",
        )
    queries = ReadModelQueries(reporting_pool)
    instants = (cutoff, last)
    before = [await read(queries, at) for at in instants]
    views = await kept_views(reporting_pool, cutoff)
    assert before[0][1][2] == (f"{PORTFOLIO}/jira/P3", 1, 7, "P3 r1")
    at_first = await read(queries, first)
    assert at_first[0] == 3
    assert at_first[2] is not None
    assert at_first[2][0] == 1
    assert await counts(reporting_pool) == (3 + 2 + 1 + 1, 3 * 3 + 1, 2 * 4)

    retention = at_cutoff(reporting_pool, cutoff, projects=2, rows=1)
    assert retention.cutoff() == cutoff
    async with reporting_pool.acquire() as conn:
        purge = HistoryPurge(conn)
        kept = await purge.kept([f"{PORTFOLIO}/jira/{p}" for p in PROJECTS], cutoff)
        assert await purge.projects(kept, cutoff, 1) == (1, 1)  # at most a row of each
    assert await retention.sweep() == Swept(versions=3 - 1, moves=4 - 1, summaries=2 + 2)

    assert await counts(reporting_pool) == (4, 6, 2 + 2)
    assert [await read(queries, at) for at in instants] == before
    assert await kept_views(reporting_pool, cutoff) == views
    with pytest.raises(asyncpg.PostgresError) as refused:
        await read(queries, first)
    assert refused.value.sqlstate == SWEPT
    # Without the recorded cutoff, that instant would read from what is left: not as it was.
    await reporting_pool.execute("DELETE FROM history_kept")
    assert await read(queries, first) != at_first
    assert await retention.sweep() == Swept()


async def kept_views(pool: asyncpg.Pool[Any], cutoff: datetime) -> tuple[Any, ...]:
    """BI's rows of versions and plan summaries in force at or after ``cutoff``."""
    versions = await pool.fetch(
        "SELECT * FROM v_projects_history WHERE portfolio = $1"
        " AND (valid_to IS NULL OR valid_to > $2) ORDER BY project_key, valid_from",
        PORTFOLIO,
        cutoff,
    )
    capacity = await pool.fetch(
        "SELECT * FROM v_capacity_history WHERE portfolio = $1"
        " AND (valid_to IS NULL OR valid_to > $2) ORDER BY plan_version, role, month",
        PORTFOLIO,
        cutoff,
    )
    assert versions
    assert capacity
    return [tuple(r) for r in versions], [tuple(r) for r in capacity]


async def test_the_api_refuses_an_instant_before_the_kept_history(
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    """With a retention of 30 days, every endpoint that takes ``as_of`` (all those the OpenAPI
    document lists with it) answers one 31 days back, with or without an offset, with a 422
    naming the earliest instant kept then, and one 29 days back or now from the history (a
    project that did not exist yet is a 404, not a refusal)."""
    async with reporting_pool.acquire() as conn:
        await step(conn, {"P1": 1, "P2": 1, "P3": 1}, 1)
    settings = ReportingSettings(api_token=TOKEN, history_retention_days=30)
    app = create_api(settings, lambda: ReadModelQueries(reporting_pool))
    placeholders = {"portfolio": PORTFOLIO, "source": "jira", "external_id": "P1"}
    # Each path that takes as_of, with a value for each number it requires (a budget).
    paths: dict[str, dict[str, float]] = {}
    for path, operations in app.openapi()["paths"].items():
        parameters = operations.get("get", {}).get("parameters", [])
        if any(p["name"] == "as_of" for p in parameters):
            required = [p for p in parameters if p["in"] == "query" and p.get("required")]
            assert all(p["schema"].get("type") == "number" for p in required), (path, required)
            paths[path.format(**placeholders)] = {p["name"]: 1000.0 for p in required}
    assert len(paths) >= 8, paths
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        for path, needs in paths.items():
            now = datetime.now(UTC)
            for old in (now - timedelta(days=31), (now - timedelta(days=31)).replace(tzinfo=None)):
                refused = await client.get(path, params={"as_of": old.isoformat(), **needs})
                assert refused.status_code == 422, (path, old, refused.text)
                detail = refused.json()["detail"][0]
                assert detail["loc"] == ["query", "as_of"]
                named = datetime.fromisoformat(detail["msg"].rsplit(" ", 1)[-1])
                assert "kept for 30 days" in detail["msg"]
                assert abs(named - (now - timedelta(days=30))) < timedelta(seconds=5), detail
            # 29 days back the project did not exist yet: its own endpoint answers 404.
            earlier = await client.get(
                path, params={"as_of": (now - timedelta(days=29)).isoformat(), **needs}
            )
            assert earlier.status_code in (200, 404), (path, earlier.text)
            answered = await client.get(path, params={"as_of": now.isoformat(), **needs})
            assert answered.status_code == 200, (path, answered.text)
        listed = await client.get(
            f"/api/v1/portfolios/{PORTFOLIO}/projects",
            params={"as_of": datetime.now(UTC).isoformat()},
        )
        assert listed.json()["total"] == 3
        reach = (await client.get("/api/v1/history")).json()
    assert reach["retention_days"] == 30
    kept_from = datetime.fromisoformat(reach["kept_from"])
    assert abs(kept_from - (datetime.now(UTC) - RETENTION)) < timedelta(seconds=5), reach


async def test_an_instant_a_sweep_let_go_is_refused_after_the_window_grows(
    reporting_pool: asyncpg.Pool[Any], database: DatabaseSettings
) -> None:
    """A sweep records its cutoff before it deletes. An API whose window is longer than the
    sweeper's (grown since), or which has no retention at all (unset since), refuses an
    instant before that cutoff, naming it, and answers the cutoff itself as it was; BI reads
    the cutoff from v_history_kept. A later sweep with a longer window (or a clock behind)
    leaves the recorded cutoff where it was; one with a later cutoff moves it on."""
    async with reporting_pool.acquire() as conn:
        first = await step(conn, {"P1": 1, "P2": 1, "P3": 1}, 1)
        cutoff = await step(conn, {"P1": 2}, 2)
        await step(conn, {"P1": 3}, 3)
    queries = ReadModelQueries(reporting_pool)
    at_cutoff_before = await read(queries, cutoff)
    assert await queries.kept_from() is None

    class Checked(HistoryRetention):
        async def _projects_of(self, keys: Sequence[str], cutoff: datetime) -> Swept:
            # Recorded before anything is deleted (a failure here leaves the batch unswept).
            assert await queries.kept_from() == cutoff
            return await super()._projects_of(keys, cutoff)

    assert (await at_cutoff(reporting_pool, cutoff, Checked).sweep()).versions == 1
    assert await queries.kept_from() == cutoff
    assert await read(queries, cutoff) == at_cutoff_before

    for days in (None, 365):
        settings = ReportingSettings(api_token=TOKEN, history_retention_days=days)
        app = create_api(settings, lambda: queries)
        app.include_router(dashboard_router(settings, lambda: queries))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            path = f"/api/v1/portfolios/{PORTFOLIO}/projects"
            panels = f"/dashboard/{PORTFOLIO}/panels"
            for gone in (first, cutoff - timedelta(microseconds=1)):
                for refusing in (path, panels):
                    refused = await client.get(refusing, params={"as_of": gone.isoformat()})
                    assert refused.status_code == 422, (days, refusing, refused.text)
                    detail = refused.json()["detail"][0]
                    assert detail["loc"] == ["query", "as_of"]
                    assert "has been swept" in detail["msg"], detail
                    assert datetime.fromisoformat(detail["msg"].rsplit(" ", 1)[-1]) == cutoff
            shown = await client.get(panels, params={"as_of": cutoff.isoformat()})
            assert shown.status_code == 200, shown.text
            ranking = shown.text.split('<section id="ranking">')[1].split("</section>")[0]
            assert ranking.count("<tr data-project=") == 3
            answered = await client.get(path, params={"as_of": cutoff.isoformat()})
            assert answered.status_code == 200, answered.text
            assert sorted((i["project_key"], i["revision"]) for i in answered.json()["items"]) == [
                (key, revision) for key, revision, _, _ in at_cutoff_before[1]
            ]
            reach = (await client.get("/api/v1/history")).json()
            assert reach == {"retention_days": days, "kept_from": reach["kept_from"]}
            assert datetime.fromisoformat(reach["kept_from"]) == cutoff

    bi = await asyncpg.connect(role_url(database.url, "pmo_bi"))
    try:
        assert await bi.fetchval("SELECT kept_from FROM reporting.v_history_kept") == cutoff
    finally:
        await bi.close()
    await at_cutoff(reporting_pool, cutoff - timedelta(hours=1)).sweep()
    assert await queries.kept_from() == cutoff
    later = cutoff + timedelta(seconds=1)
    await at_cutoff(reporting_pool, later).sweep()
    assert await queries.kept_from() == later


async def test_every_read_of_the_history_refuses_a_swept_instant_itself(
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    """The recorded cutoff is checked by each read of the history itself, in its own snapshot,
    not read beforehand: a read of an earlier instant fails (PM001, the cutoff its detail),
    also where it finds no row, and the API answers with a 422 naming the cutoff: for an
    ``as_of`` of a list, of one project, of a plan, of the dashboard, and for the movement's
    ``since``. At the cutoff, all answer."""
    async with reporting_pool.acquire() as conn:
        first = await step(conn, {"P1": 1, "P2": 1, "P3": 1}, 1)
        cutoff = await step(conn, {"P1": 2}, 2)
        await HistoryPurge(conn).keep_from(cutoff)

    queries = ReadModelQueries(reporting_pool)
    for read_then in (
        queries.projects(PORTFOLIO, limit=10, offset=0, as_of=first),
        queries.project(f"{PORTFOLIO}/jira/NONE", first),  # no such project: no row
        queries.summary("no-such-portfolio", first),
        queries.movement(PORTFOLIO, since=first, until=None, limit=10, offset=0),
    ):
        with pytest.raises(asyncpg.PostgresError) as raised:
            await read_then
        assert raised.value.sqlstate == SWEPT
        assert datetime.fromisoformat(raised.value.detail) == cutoff
    assert await queries.summary(PORTFOLIO, cutoff) is not None

    settings = ReportingSettings(api_token=TOKEN)
    app = create_api(settings, lambda: queries)
    app.include_router(dashboard_router(settings, lambda: queries))
    base = f"/api/v1/portfolios/{PORTFOLIO}"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        for path, name in (
            (f"{base}/projects", "as_of"),
            (f"{base}/projects/jira/P1", "as_of"),
            (f"{base}/capacity", "as_of"),
            (f"/dashboard/{PORTFOLIO}/panels", "as_of"),
            (f"{base}/movement", "since"),
        ):
            refused = await client.get(path, params={name: first.isoformat()})
            assert refused.status_code == 422, (path, refused.text)
            detail = refused.json()["detail"][0]
            assert detail["loc"] == ["query", name]
            assert "has been swept" in detail["msg"], detail
            assert datetime.fromisoformat(detail["msg"].rsplit(" ", 1)[-1]) == cutoff
            answered = await client.get(path, params={name: cutoff.isoformat()})
            assert answered.status_code == 200, (path, answered.text)


async def test_a_failing_batch_is_left_to_the_next_sweep_and_the_worker_goes_on(
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    """A batch of projects that fails with an unexpected error is counted and skipped: the
    sweep goes on to the next batch and the plan summaries. And a worker whose whole sweep
    fails keeps running, sweeping again at its interval."""
    async with reporting_pool.acquire() as conn:
        await step(conn, {"P1": 1, "P2": 1, "P3": 1}, 1)
        await step(conn, {"P1": 2, "P2": 2, "P3": 2}, 2)
        cutoff = await step(conn, {"P1": 3, "P2": 3, "P3": 3}, 3)

    class FirstBatchFails(HistoryRetention):
        async def _projects_of(self, keys: Sequence[str], cutoff: datetime) -> Swept:
            if f"{PORTFOLIO}/jira/P1" in keys:
                raise ValueError("a batch that cannot be swept")
            return await super()._projects_of(keys, cutoff)

    failures = REGISTRY.get_sample_value("pmo_history_sweep_failures_total") or 0.0
    retention = at_cutoff(reporting_pool, cutoff, FirstBatchFails, projects=1)
    # P1 is skipped; P2's and P3's first two versions and ranking 2's moves go, and the first
    # two summaries of each portfolio.
    assert await retention.sweep() == Swept(versions=2 * 2, moves=2, summaries=2 * 2)
    assert REGISTRY.get_sample_value("pmo_history_sweep_failures_total") == failures + 1

    class SweepFails(HistoryRetention):
        async def sweep(self) -> Swept:
            raise RuntimeError("the whole sweep fails")

    worker = asyncio.create_task(
        SweepFails(lambda: reporting_pool, RETENTION, lambda: cutoff, interval=0.01).run()
    )

    async def failed_again() -> bool:
        counted = REGISTRY.get_sample_value("pmo_history_sweep_failures_total") or 0.0
        return counted >= failures + 4

    try:
        await eventually(failed_again, what="the worker sweeping again after failures")
        assert not worker.done()
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def test_a_worker_with_a_retention_sweeps_its_history(
    reporting_pool: asyncpg.Pool[Any], database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    """A reporting worker (the ``others`` role) given a retention of a day sweeps as it
    starts: of a project's versions four days, three days and twelve hours old and its current
    one, the oldest goes, and the one in force a day ago stays, as do the two since;
    ``pmo_history_purged_total`` counts it."""
    key = f"{PORTFOLIO}/jira/P1"
    async with reporting_pool.acquire() as conn:
        await step(conn, {"P1": 1, "P2": 1, "P3": 1}, 1)
        for hours in (4 * 24, 3 * 24, 12):
            # A copy of the project's current version, dated ``hours`` ago.
            async with conn.transaction():
                await conn.execute(
                    "CREATE TEMP TABLE old ON COMMIT DROP AS SELECT * FROM projects_history"
                    " WHERE project_key = $1 AND valid_from > now() - interval '1 hour'",
                    key,
                )
                await conn.execute(
                    "UPDATE old SET revision = 0, valid_from = now() - make_interval(hours => $1)",
                    hours,
                )
                await conn.execute("INSERT INTO projects_history SELECT * FROM old")
    ages = (
        "SELECT array_agg(now() - valid_from > interval '2 days' ORDER BY valid_from)"
        " FROM projects_history WHERE project_key = $1"
    )
    assert await reporting_pool.fetchval(ages, key) == [True, True, False, False]
    labels = {"table": "projects_history"}
    purged = REGISTRY.get_sample_value("pmo_history_purged_total", labels) or 0.0

    settings = ReportingSettings(
        api_token=TOKEN,
        role="others",
        group_id=f"{kafka.topic_prefix}pmo-reporting",
        history_retention_days=1,
    )
    async with build(settings, kafka, database):

        async def swept() -> bool:
            return await reporting_pool.fetchval(ages, key) == [True, False, False]

        await eventually(swept, what="the oldest version swept")
    assert REGISTRY.get_sample_value("pmo_history_purged_total", labels) == purged + 1


async def test_the_first_sweep_builds_its_index_once_and_again_when_left_invalid(
    reporting_pool: asyncpg.Pool[Any], database: DatabaseSettings
) -> None:
    """The rank moves' index by time is not there until a retention first sweeps, which builds
    it; an index a failed build left invalid is built again; while another replica holds the
    build of an index not yet valid, a sweep deletes nothing and leaves it to the next."""
    assert await index_valid(reporting_pool) is None
    retention = HistoryRetention(
        lambda: reporting_pool, RETENTION, lambda: datetime.now(UTC), interval=3600
    )
    assert await retention.sweep() == Swept()
    assert await index_valid(reporting_pool) is True

    await mark_invalid(database)
    assert await index_valid(reporting_pool) is False
    assert await retention.prepare()
    assert await index_valid(reporting_pool) is True

    async with reporting_pool.acquire() as conn:
        await step(conn, {"P1": 1}, 1)
        await step(conn, {"P1": 2}, 2)
    later = HistoryRetention(  # its cutoff: the instant it sweeps
        lambda: reporting_pool,
        RETENTION,
        lambda: datetime.now(UTC) + RETENTION + SKEW,
        interval=3600,
    )
    await mark_invalid(database)
    async with reporting_pool.acquire() as other:
        await other.execute("SELECT pg_advisory_lock($1)", BUILD_LOCK)
        try:
            assert not await later.prepare()
            assert await later.sweep() == Swept()
        finally:
            await other.execute("SELECT pg_advisory_unlock($1)", BUILD_LOCK)
    assert await index_valid(reporting_pool) is False
    assert await later.sweep() == Swept(versions=1, moves=0, summaries=2)
    assert await index_valid(reporting_pool) is True


async def index_valid(pool: asyncpg.Pool[Any]) -> bool | None:
    async with pool.acquire() as conn:
        return await HistoryPurge(conn).index_valid()


async def mark_invalid(database: DatabaseSettings) -> None:
    """Mark the sweep's index invalid, as a build that failed leaves it."""
    admin = await asyncpg.connect(database.url)
    try:
        await admin.execute(
            "UPDATE pg_index SET indisvalid = false"
            f" WHERE indexrelid = 'reporting.{RANK_MOVES_BY_TIME}'::regclass"
        )
    finally:
        await admin.close()


async def test_a_build_cancelled_midway_leaves_no_lock_and_is_built_again(
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    """A build waits for the transactions writing rank moves when it starts. Cancelled while it
    waits (a stop), it gives its lock back before its connection returns to the pool, and the
    index it left invalid is dropped and built again by the next sweep."""
    locks = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    retention = HistoryRetention(
        lambda: reporting_pool, RETENTION, lambda: datetime.now(UTC), interval=3600
    )
    async with reporting_pool.acquire() as writer:
        writing = writer.transaction()
        await writing.start()
        await writer.execute(
            "INSERT INTO rank_history (project_key, portfolio, ranking_version, rank)"
            " VALUES ('kept/jira/W', 'kept', 1, 1)"
        )
        building = asyncio.create_task(retention.prepare())

        async def waiting() -> bool:
            return await index_valid(reporting_pool) is False

        await eventually(waiting, what="the build waiting for the writing transaction")
        building.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await building
        await writing.rollback()

    async def unlocked() -> bool:
        return await reporting_pool.fetchval(locks) == 0

    # Given back by its session, or with it: a connection whose unlock could not run after the
    # cancel is closed, and its backend ends once the cancelled build does.
    await eventually(unlocked, within=10, what="the build's lock given back")
    assert await index_valid(reporting_pool) is False
    assert await retention.prepare()
    assert await index_valid(reporting_pool) is True
    assert await reporting_pool.fetchval(locks) == 0
