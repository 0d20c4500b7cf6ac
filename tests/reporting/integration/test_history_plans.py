"""How the history trigger finds the versions it closes, on real Postgres: through the
open-version index from a session's first statement, however few rows the history had when the
session planned its statements."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from services.reporting.repository import ReadModelWriter
from tests.helpers import project_changed

pytestmark = pytest.mark.integration

PORTFOLIO = "plans"


async def test_the_history_is_read_through_its_index_from_an_empty_table(
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    """A session plans the trigger's statements afresh for its first five calls, then keeps a
    generic plan for as long as it lives. Planned while the history held a few rows, that plan
    was a sequential scan, and every later batch of the session read the whole history to
    close a few versions: in a database filling at hundreds of projects a second (the
    benchmark's), most of reporting's project lane's Postgres time. Here one session writes
    twenty batches, new projects and new revisions of earlier ones, from an empty history,
    and no statement of it scans the history."""
    async with reporting_pool.acquire() as conn, conn.transaction():
        writer = ReadModelWriter(conn)
        for batch in range(20):
            news = [project_changed(PORTFOLIO, f"N{batch}-{i}") for i in range(3)]
            again = [project_changed(PORTFOLIO, f"N{b}-0", batch + 1) for b in range(batch)]
            await writer.apply_projects([*news, *again])
        scans = await conn.fetchrow(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables"
            " WHERE relname = 'projects_history'"
        )
        versions = await conn.fetchval(
            "SELECT count(*) FROM projects_history WHERE valid_to IS NULL"
        )
    assert versions == 60  # every project written has its one open version
    assert scans is not None
    assert scans["idx_scan"] > 0
    assert scans["seq_scan"] == 0, scans
