"""Fixtures of reporting's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings
from tests.conftest import service_url

APPLICATION = "reporting-tests"


@pytest.fixture
async def reporting_pool(database: DatabaseSettings) -> AsyncIterator[asyncpg.Pool[Any]]:
    """Reporting's pool on a migrated database, as its own role (``APPLICATION`` names its
    connections in ``pg_stat_activity``)."""
    await migrate(database.url, [service_component("reporting")])
    the_pool = await create_pool(
        service_url(database, "reporting"), schema="reporting", application_name=APPLICATION
    )
    try:
        yield the_pool
    finally:
        await the_pool.close()
