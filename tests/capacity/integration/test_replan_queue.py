"""The replan queue on real Postgres: a request outlives the process that made it, a burst of
requests for one portfolio costs one replan, and two replanners racing for it (two replicas)
replan it once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.capacity.handlers import CapacityHandler
from services.capacity.repository import CapacityUnitOfWork
from tests.capacity.integration.test_ranks import TOPICS, record, scored

pytestmark = pytest.mark.integration


def handler(pool: asyncpg.Pool[Any], spacing: timedelta = timedelta(0)) -> CapacityHandler:
    return CapacityHandler(
        uow=lambda: CapacityUnitOfWork(pool),
        topics=TOPICS,
        clock=lambda: datetime(2027, 1, 5, tzinfo=UTC),
        horizon_months=12,
        plan_start="2027-01",
        replan_spacing=spacing,
    )


async def request(pool: asyncpg.Pool[Any], *portfolios: str) -> None:
    async with CapacityUnitOfWork(pool) as uow:
        await uow.plans.request_replan(list(portfolios))


async def due(pool: asyncpg.Pool[Any]) -> list[str]:
    async with CapacityUnitOfWork(pool) as uow:
        return (await uow.plans.due_replans(100, timedelta(0)))[0]


async def test_requests_coalesce_survive_a_restart_and_are_taken_once(
    pool: asyncpg.Pool[Any],
) -> None:
    for _ in range(50):  # fifty batches touching "retail" before any replanner runs
        await request(pool, "retail")
    await request(pool, "wholesale", "retail")
    assert sorted(await due(pool)) == ["retail", "wholesale"]
    first = await pool.fetchval(
        "SELECT replan_requested_at FROM portfolios WHERE portfolio = 'retail'"
    )
    await request(pool, "retail")
    # The earliest request time is kept, so the wait metric measures the whole wait.
    assert (
        await pool.fetchval("SELECT replan_requested_at FROM portfolios WHERE portfolio = 'retail'")
        == first
    )

    # A new process (the handler keeps nothing in memory that the queue depends on), two
    # replicas racing: each portfolio is replanned exactly once between them.
    a, b = handler(pool), handler(pool)
    done = await asyncio.gather(a.replan_due(), b.replan_due())
    assert sum(done) == 2, done
    assert await due(pool) == []
    assert await a.replan_due() == 0

    # A later change asks again.
    await request(pool, "retail")
    assert await due(pool) == ["retail"]
    assert await b.replan_due() == 1


async def test_a_batch_never_waits_for_a_replan_and_a_request_during_one_keeps_it_due(
    pool: asyncpg.Pool[Any],
) -> None:
    await request(pool, "ranked")
    async with CapacityUnitOfWork(pool) as replanning:  # a replan in progress, as the handler
        assert await replanning.try_lock("ranked")
        requests = await replanning.plans.replan_request("ranked")
        assert requests is not None
        # Meanwhile a batch of the portfolio is applied without waiting for the replan's
        # transaction (a lock wait would hang here until it commits), and another replica
        # skips the portfolio.
        batch = [record(scored("A", 1, 1, 50.0), "s:A:1", 0)]
        await asyncio.wait_for(handler(pool).handle(batch), 10)
        assert await handler(pool).replan_due() == 0
        # The replan's inputs may miss that batch: it does not clear the request.
        assert await replanning.plans.finish_replan("ranked", requests) is None
    assert await due(pool) == ["ranked"]
    # The next replan sees every request and clears it.
    assert await handler(pool).replan_due() == 1
    assert await due(pool) == []


async def test_a_portfolio_is_replanned_again_only_once_its_spacing_has_passed(
    pool: asyncpg.Pool[Any],
) -> None:
    spaced = handler(pool, timedelta(hours=1))
    await request(pool, "retail")
    assert await spaced.replan_due() == 1, "never replanned: due at once"
    for _ in range(20):  # a steady feed of batches meanwhile
        await request(pool, "retail")
    await request(pool, "wholesale")
    # "wholesale" has never been replanned; "retail" waits for its spacing, and says how long.
    assert await spaced.replan_due() == 1
    async with CapacityUnitOfWork(pool) as uow:
        due_now, wait = await uow.plans.due_replans(100, timedelta(hours=1))
    assert due_now == []
    assert wait is not None
    assert 3500 < wait <= 3600
    assert await spaced.replan_due() == 0
    # The request is kept, with its first time, and is planned once the spacing has passed:
    # the twenty batches cost one replan.
    await pool.execute(
        "UPDATE portfolios SET replanned_at = replanned_at - interval '1 hour'"
        " WHERE portfolio = 'retail'"
    )
    assert await spaced.replan_due() == 1
    assert await due(pool) == []


async def test_a_batch_does_not_wait_for_a_replan_writing_its_plan(
    pool: asyncpg.Pool[Any],
) -> None:
    """The replan writes the portfolio's row (plan version, summary hash, request cleared) in
    its last statement only: a batch asking for a replan meanwhile does not wait while the
    replan writes its placements and outbox rows."""
    replanner = handler(pool)
    await replanner.handle([record(scored("A", 1, 1, 50.0), "w:A:1", 0)])
    async with CapacityUnitOfWork(pool) as replanning:
        assert await replanning.try_lock("ranked")
        requests = await replanning.plans.replan_request("ranked")
        assert requests is not None
        inputs = await replanning.plans.inputs("ranked")
        now = datetime(2027, 1, 5, tzinfo=UTC)
        messages, version, digest = await replanner._replan(replanning, "ranked", inputs, now)
        assert messages
        assert version == 1
        assert digest is not None
        await replanning.emit(messages)
        batch = [record(scored("B", 2, 2, 40.0), "w:B:2", 1)]
        await asyncio.wait_for(handler(pool).handle(batch), 10)
        waited = await replanning.plans.finish_replan(
            "ranked", requests, plan_version=version, summary_hash=digest
        )
        assert waited is None  # B's request came after: the portfolio stays due
    async with CapacityUnitOfWork(pool) as uow:
        assert await uow.plans.plan_state("ranked") == (1, digest)
    assert await due(pool) == ["ranked"]
