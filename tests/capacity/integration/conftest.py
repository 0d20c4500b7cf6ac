"""Capacity's integration fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings
from tests.conftest import service_url


@pytest.fixture
async def pool(database: DatabaseSettings) -> AsyncIterator[asyncpg.Pool[Any]]:
    """Capacity's pool, as its own role, on a migrated fresh database."""
    await migrate(database.url, [service_component("capacity")])
    the_pool = await create_pool(
        service_url(database, "capacity"), schema="capacity", application_name="test", max_size=4
    )
    try:
        yield the_pool
    finally:
        await the_pool.close()
