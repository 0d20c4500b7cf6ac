"""Capacity's integration fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.settings import DatabaseSettings
from tests.conftest import service_pool


@pytest.fixture
async def pool(database: DatabaseSettings) -> AsyncIterator[asyncpg.Pool[Any]]:
    """Capacity's pool, as its own role, on a migrated fresh database."""
    async with service_pool(database, "capacity", max_size=4) as the_pool:
        yield the_pool
