"""A unit of work's deferred writes on real Postgres: a handler's last writes and its outbox rows
go to the database in one statement before the commit (``PostgresUnitOfWork.defer``,
``shared.db.combined``), in the order they were emitted, and not at all if the unit of work
rolls back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.db import Statement, combined, insert_statement
from shared.outbox import OutboxMessage
from shared.settings import DatabaseSettings
from shared.uow import PostgresUnitOfWork
from tests.conftest import service_pool, service_url

pytestmark = pytest.mark.integration


def test_combined_parts_are_numbered_after_the_ones_before() -> None:
    one = Statement("INSERT INTO a (x) VALUES ($1)", (1,))
    two = Statement("UPDATE b SET y = $2 WHERE z = $1", ("z", "y"))
    assert combined([one]) is one
    both = combined([one, two])
    assert both.sql == (
        "WITH w0 AS (INSERT INTO a (x) VALUES ($1)),"
        " w1 AS (UPDATE b SET y = $3 WHERE z = $2) SELECT"
    )
    assert both.args == (1, "z", "y")


@pytest.fixture
async def pool(database: DatabaseSettings) -> AsyncIterator[asyncpg.Pool[Any]]:
    """A pool of one connection of scoring's role on a migrated database: one session, so the
    queries a unit of work sends are all on the connection the test watches."""
    async with service_pool(database, "scoring", max_size=1) as connections:
        yield connections


def message(n: int) -> OutboxMessage:
    return OutboxMessage("t", b"p/s/k", str(n).encode(), {"ce_id": f"e{n}"})


async def test_deferred_writes_and_outbox_rows_are_one_round_trip_before_the_commit(
    database: DatabaseSettings, pool: asyncpg.Pool[Any]
) -> None:
    admin = await asyncpg.connect(service_url(database, "scoring"))
    try:
        await admin.execute("CREATE TABLE scoring.noted (n int PRIMARY KEY, tag text)")
        noted = insert_statement("noted", (("n", "int"), ("tag", "text")), [(1, "a"), (2, "b")])
        retagged = Statement("UPDATE noted SET tag = $1 WHERE n = $2", ("c", 3))
        async with PostgresUnitOfWork(pool) as uow:
            await uow.conn.execute("INSERT INTO noted VALUES (3, 'x')")
            uow.defer(noted)
            uow.defer(retagged)
            await uow.emit([message(1), message(2)])
            await uow.emit([message(3)])
            # Nothing deferred is written yet: the transaction still reads what was there.
            assert await uow.conn.fetchval("SELECT count(*) FROM noted") == 1
            assert await uow.conn.fetchval("SELECT count(*) FROM outbox") == 0
            sent: list[str] = []
            uow.conn.add_query_logger(lambda record: sent.append(record.query))
        # At the commit: one statement with every write, then the commit itself (asyncpg's
        # reads of the types it meets for the first time aside).
        sent = [q for q in sent if "pg_catalog" not in q and "'jit'" not in q]
        assert len(sent) == 2, sent
        assert sent[0].startswith("WITH w0 AS (INSERT INTO noted")
        assert "INTO outbox" in sent[0]
        assert sent[1] == "COMMIT;"
        assert await admin.fetch("SELECT n, tag FROM scoring.noted ORDER BY n") == [
            (1, "a"),
            (2, "b"),
            (3, "c"),
        ]
        # The outbox numbers its rows in the order they were emitted.
        values = await admin.fetch("SELECT value FROM scoring.outbox ORDER BY id")
        assert [r["value"] for r in values] == [b"1", b"2", b"3"]
    finally:
        await admin.close()


async def test_many_rows_emitted_after_a_few_follow_them_in_the_outbox(
    pool: asyncpg.Pool[Any],
) -> None:
    """Many rows are copied when emitted, the few emitted before them written first; the few
    emitted after them are written at the commit."""
    async with PostgresUnitOfWork(pool) as uow:
        await uow.emit([message(0)])
        await uow.emit([message(n) for n in range(1, 1001)])
        await uow.emit([message(1001)])
    async with pool.acquire() as conn:
        values = await conn.fetch("SELECT value FROM scoring.outbox ORDER BY id")
    assert [int(r["value"]) for r in values] == list(range(1002))


async def test_a_deferred_write_that_fails_rolls_the_unit_of_work_back(
    pool: asyncpg.Pool[Any],
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE scoring.noted (n int PRIMARY KEY)")

    async def conflicting() -> None:
        async with PostgresUnitOfWork(pool) as uow:
            await uow.conn.execute("INSERT INTO noted VALUES (7)")
            await uow.emit([message(1)])
            uow.defer(insert_statement("noted", (("n", "int"),), [(7,)]))

    with pytest.raises(asyncpg.UniqueViolationError):
        await conflicting()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM scoring.noted") == 0
        assert await conn.fetchval("SELECT count(*) FROM scoring.outbox") == 0
        # The connection went back to the pool usable, outside any transaction.
        assert not conn.is_in_transaction()
