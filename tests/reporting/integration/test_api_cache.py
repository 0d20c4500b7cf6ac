"""The API's page cache against real Postgres: a change to the read model is visible on the next
request whichever connection or replica wrote it, including transactions that commit out of
order; the history and CSV stay right; rows of writers that have gone are folded away without
moving the validator back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from services.reporting.api import create_api
from services.reporting.handlers import ReportingHandler
from services.reporting.repository import ReadModelQueries, ReportingUnitOfWork
from services.reporting.settings import ReportingSettings
from shared.consumer_record import Record
from shared.contracts.events import Contribution, ProjectScored
from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings
from shared.topics import Topic, TopicNames
from tests.conftest import service_url
from tests.helpers import eventually
from tests.security.seed import seed_reporting

pytestmark = pytest.mark.integration

NAMES = TopicNames("")
TOKEN = "admin-token-cache-0001"
RANKING = "/api/v1/portfolios/retail/ranking"
FIRST = "retail/jira/P000"


@pytest.fixture
async def reporting_pool(database: DatabaseSettings) -> AsyncIterator[asyncpg.Pool[Any]]:
    await migrate(database.url, [service_component("reporting")])
    await seed_reporting(database, NAMES, {"retail": 6, "wholesale": 2})
    pool = await create_pool(
        service_url(database, "reporting"), schema="reporting", application_name="t"
    )
    yield pool
    await pool.close()


async def _replica(database: DatabaseSettings) -> tuple[httpx.AsyncClient, asyncpg.Pool[Any]]:
    """A reporting API with a pool of its own, as another replica would have."""
    pool = await create_pool(
        service_url(database, "reporting"), schema="reporting", application_name="replica"
    )
    app = create_api(ReportingSettings(api_token=TOKEN), lambda: ReadModelQueries(pool))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return client, pool


async def _writer(database: DatabaseSettings) -> asyncpg.Connection[Any]:
    """A connection of its own, as another process writing the read model would have."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        service_url(database, "reporting"), server_settings={"search_path": "reporting"}
    )
    return conn


def _names(page: httpx.Response) -> dict[str, str]:
    return {i["project_key"]: i["name"] for i in page.json()["items"]}


async def test_a_change_is_visible_on_the_next_request_whoever_wrote_it(
    database: DatabaseSettings, reporting_pool: asyncpg.Pool[Any]
) -> None:
    (one, one_pool), (two, two_pool) = await _replica(database), await _replica(database)
    writer = await _writer(database)
    try:
        before = await one.get(RANKING)
        assert (await two.get(RANKING)).content == before.content
        assert (await one.get(RANKING)).content == before.content

        await writer.execute("UPDATE projects SET name = 'renamed' WHERE project_key = $1", FIRST)
        for replica in (one, two):
            assert _names(await replica.get(RANKING))[FIRST] == "renamed"

        # Through reporting's own handler (the consumer of another replica): a new ranking.
        handler = ReportingHandler(
            lambda: ReportingUnitOfWork(reporting_pool), NAMES, lambda: datetime.now(UTC)
        )
        rescored = ProjectScored(
            project_key=FIRST,
            portfolio="retail",
            project_revision=1,
            ranking_version=2,
            model="weighted-default",
            model_version=0,
            score=1.0,
            rank=7,
            mandatory=False,
            explanation=[
                Contribution(criterion="value", raw=1, normalised=0.1, weight=1, contribution=1)
            ],
            cause="project_revision",
        )
        record = Record(
            topic=NAMES(Topic.SCORES),
            partition=0,
            offset=10_000,
            key=FIRST.encode(),
            value=rescored.model_dump_json().encode(),
            headers=(("ce_id", b"rescored-first"),),
            timestamp_ms=0,
        )
        await handler.handle([record])
        for replica in (one, two):
            items = (await replica.get(RANKING)).json()["items"]
            assert items[-1]["project_key"] == FIRST
            assert items[-1]["rank"] == 7
    finally:
        await writer.close()
        for client, pool in ((one, one_pool), (two, two_pool)):
            await client.aclose()
            await pool.close()


async def test_transactions_committing_out_of_order_each_change_the_validator(
    database: DatabaseSettings, reporting_pool: asyncpg.Pool[Any]
) -> None:
    queries = ReadModelQueries(reporting_pool)
    early, late = await _writer(database), await _writer(database)
    try:
        # `early` begins first and commits last: its transaction id is the smaller one.
        first = early.transaction()
        await first.start()
        await early.execute("UPDATE projects SET name = 'early' WHERE project_key = $1", FIRST)
        async with late.transaction():
            await late.execute(
                "UPDATE projects SET name = 'late' WHERE project_key = 'retail/jira/P001'"
            )
        between = await queries.projects_version("retail")
        await first.commit()
        after = await queries.projects_version("retail")
        assert after != between

        untouched = await queries.projects_version("wholesale")
        async with late.transaction():
            await late.execute("UPDATE projects SET name = 'x' WHERE project_key = $1", FIRST)
        assert await queries.projects_version("wholesale") == untouched
    finally:
        await early.close()
        await late.close()


async def test_history_and_csv_after_a_change(
    database: DatabaseSettings, reporting_pool: asyncpg.Pool[Any]
) -> None:
    client, pool = await _replica(database)
    writer = await _writer(database)
    try:
        before = await client.get(RANKING)
        csv_before = await client.get(RANKING, params={"format": "csv"})
        assert "renamed" not in csv_before.text
        instant = await writer.fetchval("SELECT now()")
        await writer.execute("UPDATE projects SET name = 'renamed' WHERE project_key = $1", FIRST)

        assert "renamed" in (await client.get(RANKING, params={"format": "csv"})).text
        old = await client.get(RANKING, params={"as_of": instant.isoformat()})
        assert _names(old) == _names(before)
        assert _names(await client.get(RANKING))[FIRST] == "renamed"
        not_modified = await client.get(
            RANKING,
            params={"as_of": instant.isoformat()},
            headers={"If-None-Match": old.headers["etag"]},
        )
        assert not_modified.status_code == 304
    finally:
        await writer.close()
        await client.aclose()
        await pool.close()


async def test_an_empty_page_still_has_the_total(
    database: DatabaseSettings, reporting_pool: asyncpg.Pool[Any]
) -> None:
    total, items = await ReadModelQueries(reporting_pool).projects("retail", limit=5, offset=100)
    assert (total, items) == (6, [])


async def test_rows_of_writers_that_have_gone_are_folded_without_moving_the_validator_back(
    database: DatabaseSettings, reporting_pool: asyncpg.Pool[Any]
) -> None:
    queries = ReadModelQueries(reporting_pool)
    admin = await asyncpg.connect(database.url)
    writers: list[int] = []
    try:
        for name in ("first", "second", "third"):
            before = int(await queries.projects_version("retail"))
            writer = await _writer(database)
            writers.append(await writer.fetchval("SELECT pg_backend_pid()"))
            await writer.execute(
                "UPDATE projects SET name = $1 WHERE project_key = $2", name, FIRST
            )
            await writer.close()
            assert int(await queries.projects_version("retail")) == before + 1

            async def ended(pid: int = writers[-1]) -> bool:
                return not await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
                )

            await eventually(ended, within=10, what="the writer's backend to end")
        left = {
            r["writer"]
            for r in await admin.fetch(
                "SELECT writer FROM reporting.project_changes WHERE portfolio = 'retail'"
            )
        }
        # Each writer's first write folded the rows of those that had gone before it.
        assert writers[2] in left
        assert not left & set(writers[:2])
    finally:
        await admin.close()
