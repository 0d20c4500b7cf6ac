"""How the API finds one project, on real Postgres: through the primary key, however few rows
the table held when the pool's session planned the lookup."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.reporting.repository import ReadModelQueries, ReadModelWriter
from shared.db import create_pool
from shared.settings import DatabaseSettings
from tests.conftest import service_url
from tests.helpers import project_changed

pytestmark = pytest.mark.integration

PORTFOLIO = "lookup"
PROJECTS = 2_000


async def index_scans(database: DatabaseSettings) -> dict[str, int]:
    """Index scans so far of reporting's projects and their history, by index."""
    conn = await asyncpg.connect(database.url)
    try:
        rows = await conn.fetch(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes"
            " WHERE schemaname = 'reporting' AND relname IN ('projects', 'projects_history')"
        )
    finally:
        await conn.close()
    return {r["indexrelname"]: r["idx_scan"] for r in rows}


async def flush_statistics(pool: asyncpg.Pool[Any]) -> None:
    """Have the pool's one session report its statistics now rather than when it ends."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT 1")


@pytest.mark.usefixtures("reporting_pool")  # the database, migrated for reporting
async def test_one_project_is_read_through_its_key_from_an_empty_table(
    database: DatabaseSettings,
) -> None:
    """A session plans a prepared statement for its first five runs, then keeps a generic plan
    for as long as it lives. Asked by portfolio and key, the lookup planned while the table
    was empty read the portfolio's index and filtered the portfolio's rows by key: every
    lookup scanned the whole portfolio (1.2 ms each for 1,800 projects under the benchmark's
    load); as of an instant, the portfolio's whole history up to it. One session looks a
    project up, now and as of an instant, on an empty table, then, with thousands of projects
    written, finds fifty each way, and never reads a portfolio's index."""
    # One session each, so that each flush reports the session that did the work.
    reader, writer = [
        await create_pool(
            service_url(database, "reporting"),
            schema="reporting",
            application_name=name,
            max_size=1,
        )
        for name in ("reader", "writer")
    ]
    try:
        queries = ReadModelQueries(reader)
        for _ in range(8):
            assert await queries.project(f"{PORTFOLIO}/jira/P1") is None
            assert await queries.project(f"{PORTFOLIO}/jira/P1", datetime.now(UTC)) is None
        async with writer.acquire() as conn, conn.transaction():
            await ReadModelWriter(conn).apply_projects(
                [project_changed(PORTFOLIO, f"P{i}") for i in range(PROJECTS)]
                + [project_changed("other", f"P{i}") for i in range(10)]
            )
        await flush_statistics(writer)
        await flush_statistics(reader)
        before = await index_scans(database)
        at = datetime.now(UTC)
        for i in range(0, PROJECTS, PROJECTS // 50):
            for as_of in (None, at):
                found = await queries.project(f"{PORTFOLIO}/jira/P{i}", as_of)
                assert found is not None
                assert found["external_id"] == f"P{i}"
        assert await queries.project(f"{PORTFOLIO}/jira/Q1") is None  # never written
        await flush_statistics(reader)
    finally:
        await reader.close()
        await writer.close()
    after = await index_scans(database)
    assert after["projects_pkey"] - before["projects_pkey"] >= 50
    assert after["projects_history_key"] - before["projects_history_key"] >= 50
    for portfolio_index in ("projects_portfolio", "projects_history_portfolio"):
        assert after[portfolio_index] == before[portfolio_index], (before, after)
