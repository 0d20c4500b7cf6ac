"""Waiting for a project's revision (the project endpoint's ``min_revision`` and ``wait``) on
real Postgres: the answer comes when another process's transaction writes the revision, woken
by its notice; it comes with the project as it is when the wait runs out; and the API's
listening connection goes back to the pool once nobody waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import httpx
import pytest

from services.reporting import waits as waits_module
from services.reporting.api import create_api
from services.reporting.repository import ReadModelQueries, ReadModelWriter
from services.reporting.settings import ReportingSettings
from services.reporting.waits import ProjectWaits
from shared.contracts.events import ProjectChanged
from shared.settings import DatabaseSettings
from tests.conftest import service_url
from tests.helpers import eventually, project_changed

pytestmark = pytest.mark.integration

TOKEN = "read-token-waits-0001"
PATH = "/api/v1/portfolios/retail/projects/jira/P1"


@pytest.fixture
async def api(
    reporting_pool: asyncpg.Pool[Any],
) -> AsyncIterator[tuple[httpx.AsyncClient, ProjectWaits]]:
    waits = ProjectWaits(lambda: reporting_pool)
    app = create_api(
        ReportingSettings(api_token=TOKEN), lambda: ReadModelQueries(reporting_pool), waits=waits
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client, waits
    await waits.close()


async def write(
    database: DatabaseSettings, revision: int, others: Sequence[ProjectChanged] = ()
) -> None:
    """Revision ``revision`` of retail/jira/P1 (none when 0) and ``others``, in one statement
    committed by a connection of its own, as the project lane's process would."""
    conn = await asyncpg.connect(
        service_url(database, "reporting"), server_settings={"search_path": "reporting"}
    )
    try:
        mine = [project_changed("retail", "P1", revision)] if revision else []
        async with conn.transaction():
            await ReadModelWriter(conn).apply_projects([*mine, *others])
    finally:
        await conn.close()


async def test_a_waiting_request_is_answered_when_another_process_writes_the_revision(
    database: DatabaseSettings,
    api: tuple[httpx.AsyncClient, ProjectWaits],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, waits = api
    # No check without a notice during the test: an answer can only come from the notice.
    monkeypatch.setattr(waits_module, "RECHECK_SECONDS", 600.0)
    asked = asyncio.create_task(client.get(PATH, params={"min_revision": 1, "wait": 20}))

    async def checked_once() -> bool:
        return waits.waiting == 1 and waits.checks >= 1

    await eventually(checked_once, what="the request waiting, its project checked")
    assert not asked.done()  # the project does not exist yet
    await write(database, 1)
    answer = await asyncio.wait_for(asked, 15)
    assert answer.status_code == 200
    assert answer.json()["revision"] == 1
    assert waits.waiting == 0

    # Revision 2 is waited for the same way; a request for one it already has answers at once.
    later = asyncio.create_task(client.get(PATH, params={"min_revision": 2, "wait": 20}))
    await eventually(checked_once, what="the second request waiting")
    now = await client.get(PATH, params={"min_revision": 1, "wait": 20})
    assert now.json()["revision"] == 1
    assert not later.done()
    await write(database, 2)
    assert (await asyncio.wait_for(later, 15)).json()["revision"] == 2


async def test_a_notice_makes_a_read_only_of_the_waited_for_projects_it_names(
    database: DatabaseSettings,
    api: tuple[httpx.AsyncClient, ProjectWaits],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A notice names the projects its statement wrote; one too long names their portfolios,
    and one too long again names none, which means any (migration 0019)."""
    client, waits = api
    monkeypatch.setattr(waits_module, "RECHECK_SECONDS", 600.0)

    async def reads_for(others: list[ProjectChanged], revision: int) -> int:
        """The reads the watcher makes for a notice of ``others``, written while a request
        waits for revision ``revision`` of P1 (which then comes, read and answered)."""
        before = waits.checks
        asked = asyncio.create_task(client.get(PATH, params={"min_revision": revision, "wait": 20}))

        async def read_once() -> bool:
            return waits.waiting == 1 and waits.checks > before

        await eventually(read_once, what="the request's first read")
        first, notices = waits.checks, waits.notices

        async def noticed() -> bool:
            return waits.notices > notices

        await write(database, 0, others)
        await eventually(noticed, what="the notice of the others")
        await asyncio.sleep(0.3)  # time for a read it would start
        reads = waits.checks - first
        await write(database, revision)
        answer = await asyncio.wait_for(asked, 15)
        assert answer.json()["revision"] == revision
        return reads

    # Named: another project of the same portfolio reads nothing.
    assert await reads_for([project_changed("retail", "P2")], 1) == 0
    # 600 keys do not fit: the portfolios are named. Another portfolio's projects read
    # nothing; the waited-for one's are read, though P1 is not among them.
    assert await reads_for([project_changed("wholesale", f"Q{i:04d}") for i in range(600)], 2) == 0
    assert await reads_for([project_changed("retail", f"R{i:04d}") for i in range(600)], 3) == 1
    # 400 portfolios of long names do not fit either: none is named, so any project is read.
    everywhere = [project_changed(f"portfolio-number-{i:04d}", "S1") for i in range(400)]
    assert await reads_for(everywhere, 4) == 1


async def test_a_wait_that_runs_out_answers_with_the_project_as_it_is(
    database: DatabaseSettings, api: tuple[httpx.AsyncClient, ProjectWaits]
) -> None:
    client, waits = api
    missing = await client.get(PATH, params={"min_revision": 1, "wait": 0.3})
    assert missing.status_code == 404
    await write(database, 1)
    current = await client.get(PATH, params={"min_revision": 3, "wait": 0.3})
    assert current.status_code == 200
    assert current.json()["revision"] == 1
    assert waits.waiting == 0


async def test_the_listening_connection_goes_back_once_nobody_waits(
    database: DatabaseSettings,
    api: tuple[httpx.AsyncClient, ProjectWaits],
    reporting_pool: asyncpg.Pool[Any],
) -> None:
    client, _ = api
    await client.get(PATH, params={"min_revision": 1, "wait": 0.2})

    async def released() -> bool:
        # A pool of one free connection per connection it opened: none is held.
        return reporting_pool.get_idle_size() == reporting_pool.get_size()

    await eventually(released, what="the listener's connection back in the pool")
    async with reporting_pool.acquire() as conn:
        assert await conn.fetch("SELECT pg_listening_channels()") == []


async def test_waiting_is_for_the_project_as_it_is_now(
    api: tuple[httpx.AsyncClient, ProjectWaits],
) -> None:
    client, _ = api
    refused = await client.get(
        PATH, params={"min_revision": 1, "wait": 1, "as_of": "2026-12-01T00:00:00Z"}
    )
    assert refused.status_code == 422
    too_long = await client.get(PATH, params={"min_revision": 1, "wait": 60})
    assert too_long.status_code == 422
