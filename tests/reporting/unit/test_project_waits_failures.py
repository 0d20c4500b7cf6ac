"""How a request waiting for a project's revision meets the watcher's failures: the database out
of reach leaves it waiting out its own time (the watcher is started again); any other failure
is raised to it at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.reporting import waits as waits_module
from services.reporting.waits import ProjectWaits


class _Broken(Exception):
    """A failure that is not the database's being out of reach."""


async def test_a_failure_of_the_watcher_is_raised_to_the_waiting_request() -> None:
    def pool() -> Any:
        raise _Broken("the watcher cannot work")

    waits = ProjectWaits(pool)
    with pytest.raises(_Broken):
        async with asyncio.timeout(10):
            await waits.until("retail/jira/P1", 1)
    assert waits.waiting == 0


async def test_the_database_out_of_reach_leaves_the_request_waiting_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waits_module, "RECHECK_SECONDS", 0.05)
    started = 0

    def pool() -> Any:
        nonlocal started
        started += 1
        raise ConnectionRefusedError("no database")

    waits = ProjectWaits(pool)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await waits.until("retail/jira/P1", 1)
    assert started >= 2, "the watcher is started again while the request waits"
    assert waits.waiting == 0
