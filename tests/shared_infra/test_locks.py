"""Portfolio locks on real Postgres: exclusive between replicas of one service, and separate
between services sharing a database (advisory locks are database-wide)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared.db import create_pool
from shared.settings import DatabaseSettings
from shared.uow import PostgresUnitOfWork
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_a_name_is_locked_within_its_services_schema(database: DatabaseSettings) -> None:
    admin = await asyncpg.connect(database.url)
    try:
        await admin.execute("CREATE SCHEMA scoring; CREATE SCHEMA capacity")
    finally:
        await admin.close()
    scoring = await create_pool(database.url, schema="scoring", application_name="t")
    capacity = await create_pool(database.url, schema="capacity", application_name="t")
    try:
        async with PostgresUnitOfWork(scoring) as holder:
            await holder.lock("retail")
            # Another replica of the same service is kept out...
            async with PostgresUnitOfWork(scoring) as replica:
                assert not await replica.try_lock("retail")
                assert await replica.try_lock("wholesale")
            # ...another service is not.
            async with PostgresUnitOfWork(capacity) as other:
                assert await other.try_lock("retail")
        async with PostgresUnitOfWork(scoring) as replica:
            assert await replica.try_lock("retail"), "released at commit"
        # Several names are taken at once, each of them, until commit.
        async with PostgresUnitOfWork(scoring) as holder:
            await holder.lock("wholesale", "retail", "energy", "retail")
            async with PostgresUnitOfWork(scoring) as replica:
                for name in ("energy", "retail", "wholesale"):
                    assert not await replica.try_lock(name), name
                assert await replica.try_lock("public sector")
        async with PostgresUnitOfWork(scoring) as replica:
            for name in ("energy", "retail", "wholesale"):
                assert await replica.try_lock(name), f"{name} released at commit"
        # In sorted order: waiting for "retail", a batch holds "energy" and not yet "wholesale".
        async with PostgresUnitOfWork(scoring) as holder:
            await holder.lock("retail")

            async def lock_three() -> None:
                async with PostgresUnitOfWork(scoring) as batch:
                    await batch.lock("wholesale", "energy", "retail")

            waiting = asyncio.create_task(lock_three())
            try:
                async with PostgresUnitOfWork(scoring) as probe:

                    async def energy_taken() -> bool:
                        async with PostgresUnitOfWork(scoring) as other:
                            return not await other.try_lock("energy")

                    await eventually(energy_taken, within=10, what="the batch holding energy")
                    assert await probe.try_lock("wholesale"), "not taken before retail"
                assert not waiting.done()
            finally:
                if waiting.done():
                    await waiting
        await asyncio.wait_for(waiting, 10)  # retail released: the batch gets all three
    finally:
        await scoring.close()
        await capacity.close()


async def test_a_connection_goes_back_to_the_pool_with_nothing_held(
    database: DatabaseSettings,
) -> None:
    """The pool skips asyncpg's reset query (shared/db.py): after a unit of work that locked,
    and after one that failed halfway, the connection holds no lock and no transaction, and
    keeps its schema."""
    admin = await asyncpg.connect(database.url)
    try:
        await admin.execute("CREATE SCHEMA scoring")
    finally:
        await admin.close()
    pool = await create_pool(database.url, schema="scoring", application_name="t", max_size=1)
    try:
        async with PostgresUnitOfWork(pool) as uow:
            await uow.lock("retail", "wholesale")

        async def fails_halfway() -> None:
            async with PostgresUnitOfWork(pool) as uow:
                await uow.lock("retail")
                await uow.conn.execute("SET LOCAL work_mem = '64MB'")
                await uow.conn.execute("SELECT 1 / 0")

        with pytest.raises(asyncpg.DivisionByZeroError):
            await fails_halfway()
        async with pool.acquire() as conn:  # the one connection, reused
            state = await conn.fetchrow(
                "SELECT current_schema() AS schema, current_setting('work_mem') AS work_mem,"
                " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                "  AND pid = pg_backend_pid()) AS locks"
            )
            assert not conn.is_in_transaction()
        assert state is not None
        assert dict(state) == {"schema": "scoring", "work_mem": "4MB", "locks": 0}
    finally:
        await pool.close()
