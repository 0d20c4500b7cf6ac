"""Scenario 10: three `pmo migrate` processes started at once on an empty database, as three
pods of a release might: every migration is applied exactly once, all three succeed, and the
roles and schemas exist once."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.migrations import SERVICES, service_component
from tests.conftest import _with_database
from tests.reliability.harness import Figures, record

pytestmark = pytest.mark.e2e


@pytest.fixture
async def empty_database(pg_server_url: str) -> AsyncIterator[str]:
    name = f"pmo_m_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(pg_server_url, name)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def pmo_migrate(url: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMO_")}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pmo"),
        "migrate",
        env={**env, "PMO_DATABASE_URL": url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def test_three_migration_processes_at_once_apply_each_migration_once(
    empty_database: str,
) -> None:
    started = time.monotonic()
    results = await asyncio.gather(*(pmo_migrate(empty_database) for _ in range(3)))
    took = time.monotonic() - started
    for code, out in results:
        assert code == 0, out
    expected = {
        (c.schema, m.component, m.version)
        for c in (service_component(s) for s in SERVICES)
        for m in c.migrations
    }
    # What the three processes say they applied adds up to every migration, once.
    per_process = [int(out.strip().splitlines()[-1].split()[0]) for _, out in results]
    said = sum(per_process)
    conn = await asyncpg.connect(empty_database)
    try:
        rows = []
        for schema in sorted({s for s, _, _ in expected}):
            rows += [
                (schema, r["component"], r["version"])
                for r in await conn.fetch(
                    f"SELECT component, version FROM {schema}.schema_migrations"
                )
            ]
    finally:
        await conn.close()
    duplicated = len(rows) - len(set(rows))
    missing = expected - set(rows)
    figures = record(
        Figures(
            scenario="10. three `pmo migrate` processes at once",
            events=len(expected),
            lost=len(missing),
            duplicated=duplicated + max(0, said - len(expected)),
            dead_lettered=0,
            recovery_seconds=took,
            details={"applied_by_process": per_process},
        )
    )
    assert (figures.lost, figures.duplicated) == (0, 0), figures
    assert said == len(expected), results
