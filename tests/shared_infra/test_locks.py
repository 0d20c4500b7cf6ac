"""Portfolio locks on real Postgres: exclusive between replicas of one service, and separate
between services sharing a database (advisory locks are database-wide)."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db import create_pool
from shared.settings import DatabaseSettings
from shared.uow import PostgresUnitOfWork

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
    finally:
        await scoring.close()
        await capacity.close()
