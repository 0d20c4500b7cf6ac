"""A replica's replans read each project state once per revision, on real Postgres: a state
already held comes back from the held copy, a new revision or a withdrawal is read again, and
a project no longer in the portfolio is let go."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.capacity.repository import CapacityUnitOfWork, ProjectStates
from shared.contracts.events import ProjectChanged, ProjectState
from tests.helpers import project_changed

pytestmark = pytest.mark.integration

NOW = datetime(2027, 1, 5, tzinfo=UTC)


def changed(
    p: str, revision: int, name: str, *, withdrawn: bool = False, portfolio: str = "held"
) -> ProjectChanged:
    return project_changed(portfolio, p, revision, name=name, withdrawn=withdrawn, at=NOW)


async def save(pool: asyncpg.Pool[Any], *events: ProjectChanged) -> None:
    async with CapacityUnitOfWork(pool) as uow:
        await uow.plans.save_projects(events)


async def read(
    pool: asyncpg.Pool[Any], states: ProjectStates, portfolio: str = "held"
) -> dict[str, tuple[bool, ProjectState]]:
    async with CapacityUnitOfWork(pool, states) as uow:
        inputs = await uow.plans.inputs(portfolio)
    return {key.split("/")[-1]: (withdrawn, state) for key, withdrawn, state, *_ in inputs.projects}


async def test_states_are_read_once_per_revision(pool: asyncpg.Pool[Any]) -> None:
    states = ProjectStates()
    await save(pool, changed("A", 1, "Alpha"), changed("B", 1, "Beta"))
    first = await read(pool, states)
    assert {p: s.name for p, (_, s) in first.items()} == {"A": "Alpha", "B": "Beta"}

    # Unchanged: the very objects held are handed out, nothing parsed again.
    second = await read(pool, states)
    assert second["A"][1] is first["A"][1]
    assert second["B"][1] is first["B"][1]

    # A new revision of A and a withdrawal of B are read again; B stays, withdrawn.
    await save(pool, changed("A", 2, "Alpha two"), changed("B", 2, "Beta", withdrawn=True))
    third = await read(pool, states)
    assert third["A"][1].name == "Alpha two"
    assert third["A"][1] is not first["A"][1]
    assert third["B"] == (True, first["B"][1])
    assert third["B"][1] is not first["B"][1]

    # What another replica's units of work hold does not leak into a fresh one.
    assert (await read(pool, ProjectStates()))["A"][1].name == "Alpha two"

    # A project gone from the portfolio is let go.
    await pool.execute("DELETE FROM projects WHERE project_key = 'held/jira/B'")
    assert set(await read(pool, states)) == {"A"}
    assert set(states.held("held")) == {"held/jira/A"}


async def test_only_the_portfolios_most_recently_read_are_held(pool: asyncpg.Pool[Any]) -> None:
    states = ProjectStates(portfolios=2)
    for portfolio in ("p1", "p2", "p3"):
        await save(pool, changed("A", 1, "Alpha", portfolio=portfolio))
    await read(pool, states, "p1")
    await read(pool, states, "p2")
    await read(pool, states, "p1")  # p1 read again: p2 is now the least recently read
    await read(pool, states, "p3")
    assert [p for p in ("p1", "p2", "p3") if states.held(p)] == ["p1", "p3"]
    # A portfolio with no projects (a request naming an unknown one) is not held.
    assert await read(pool, states, "nowhere") == {}
    assert not states.held("nowhere")
    assert states.held("p1")
    assert states.held("p3")
