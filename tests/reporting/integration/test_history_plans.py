"""How the history trigger writes versions, on real Postgres: it finds a transaction's own
versions through the history's index from a session's first statement, however few rows the
history had when the session planned its statements, and never rewrites a version."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from services.reporting.repository import ReadModelWriter
from tests.helpers import project_changed

pytestmark = pytest.mark.integration

PORTFOLIO = "plans"

_WRITTEN = (
    "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables"
    " WHERE relname = 'projects_history'"
)


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
        versions = await conn.fetchrow(
            "SELECT count(*) AS versions, count(DISTINCT project_key) AS projects"
            " FROM projects_history"
        )
    # One transaction: every project written has one version, its last word.
    assert tuple(versions) == (60, 60)
    assert scans is not None
    assert scans["idx_scan"] > 0
    assert scans["seq_scan"] == 0, scans


async def test_a_version_is_written_once_and_ends_where_the_next_begins(
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    """A change of a project adds its version and leaves the one before as it was (migration
    0015): no history row is updated. The earlier version's end, as BI reads it, is the later
    one's start, and an instant between them reads the earlier one."""
    first = [project_changed(PORTFOLIO, f"W{i}") for i in range(5)]
    again = [project_changed(PORTFOLIO, f"W{i}", 2) for i in range(3)]
    async with reporting_pool.acquire() as conn:
        async with conn.transaction():
            await ReadModelWriter(conn).apply_projects(first)
        between = await conn.fetchval("SELECT clock_timestamp()")
        async with conn.transaction():
            # The session's counts not yet reported carry over from its transaction before.
            before = await conn.fetchrow(_WRITTEN)
            await ReadModelWriter(conn).apply_projects(again)
            after = await conn.fetchrow(_WRITTEN)
        versions = await conn.fetch(
            "SELECT project_key, valid_from, valid_to FROM v_projects_history"
            " WHERE portfolio = $1 AND project_key LIKE $2 ORDER BY project_key, valid_from",
            PORTFOLIO,
            f"{PORTFOLIO}/%/W%",
        )
        then = await conn.fetch(
            "SELECT project_key, revision FROM projects_as_of($1)"
            " WHERE portfolio = $2 AND project_key LIKE $3 ORDER BY project_key",
            between,
            PORTFOLIO,
            f"{PORTFOLIO}/%/W%",
        )
    assert before is not None
    assert after is not None
    assert [after[c] - before[c] for c in ("n_tup_ins", "n_tup_upd", "n_tup_del")] == [3, 0, 0]
    assert len(versions) == 8
    by_key: dict[str, list[asyncpg.Record]] = {}
    for v in versions:
        by_key.setdefault(v["project_key"], []).append(v)
    for key, mine in by_key.items():
        assert mine[-1]["valid_to"] is None, key
        if len(mine) == 2:
            assert mine[0]["valid_to"] == mine[1]["valid_from"] > between
    assert sorted(len(m) for m in by_key.values()) == [1, 1, 2, 2, 2]
    assert [r["revision"] for r in then] == [1] * 5
