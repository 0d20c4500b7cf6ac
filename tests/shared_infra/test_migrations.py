"""The migrations runner and the isolation of each service's schema, against real Postgres."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest

from shared.migrations import SERVICES, MigrationError, migrate, service_component, status
from shared.settings import DatabaseSettings
from tests.conftest import service_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def migrated(database: DatabaseSettings) -> DatabaseSettings:
    await migrate(database.url, [service_component(s) for s in SERVICES])
    return database


async def test_three_runners_at_once_apply_each_migration_exactly_once(
    database: DatabaseSettings,
) -> None:
    components = [service_component(s) for s in SERVICES]
    results = await asyncio.gather(*(migrate(database.url, components) for _ in range(3)))
    applied = [m for result in results for m in result]
    expected = sum(len(c.migrations) for c in components)
    assert len(applied) == expected
    rows = await status(database.url, components)
    assert all(done for _, _, done in rows)
    assert len(rows) == expected


async def test_a_changed_migration_is_refused(migrated: DatabaseSettings) -> None:
    component = service_component("scoring")
    first, *rest = component.migrations
    tampered = replace(component, migrations=(replace(first, sql=first.sql + "\n-- x"), *rest))
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(migrated.url, [tampered])


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_cannot_touch_another_schema(
    migrated: DatabaseSettings, service: str
) -> None:
    conn = await asyncpg.connect(service_url(migrated, service))
    denied = 0
    try:
        for other in SERVICES:
            if other == service:
                continue
            for statement in (
                f"SELECT count(*) FROM {other}.inbox",
                f"INSERT INTO {other}.inbox (event_id) VALUES ('x')",
                f"CREATE TABLE {other}.intruder (id int)",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
                denied += 1
        # Its own schema is its own.
        await conn.execute(f"INSERT INTO {service}.inbox (event_id) VALUES ('mine')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE public.intruder (id int)")
    finally:
        await conn.close()
    assert denied == 3 * (len(SERVICES) - 1)
