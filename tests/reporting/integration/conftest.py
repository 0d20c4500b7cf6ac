"""Fixtures of reporting's integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.reporting.api import create_api
from services.reporting.repository import ReadModelQueries
from services.reporting.settings import ReportingSettings
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


@contextlib.asynccontextmanager
async def api_client(
    pool: asyncpg.Pool[Any], token: str, settings: ReportingSettings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the reporting API on ``pool``, in this process, with ``token`` as the
    administrator's and sent with every request."""
    app = create_api(settings or ReportingSettings(api_token=token), lambda: ReadModelQueries(pool))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client
