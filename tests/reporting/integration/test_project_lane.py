"""The project lane's usual batch, project changes and nothing else, on real Postgres: one
statement that is its own transaction (the inbox's claim, the rows, their warehouse marks),
with the rows, versions and claims the transaction of any other batch leaves, and marks for
the rows it wrote only; any other batch goes through that transaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.reporting.handlers import ReportingHandler
from services.reporting.repository import ReportingUnitOfWork
from shared import metrics
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.events import ProjectChanged, ProjectsChanged, ProjectState
from shared.db import create_pool
from shared.settings import DatabaseSettings
from shared.topics import Topic, TopicNames
from tests.conftest import service_url
from tests.helpers import consumed

pytestmark = pytest.mark.integration

NAMES = TopicNames("lane.")
NOW = datetime(2026, 12, 7, tzinfo=UTC)
PORTFOLIO = "lane"
CHANGE_DELAY = timedelta(seconds=1)
DERIVED_WAIT = timedelta(seconds=30)


def key(p: str) -> str:
    return f"{PORTFOLIO}/jira/{p}"


def changed(p: str, revision: int = 1) -> ProjectChanged:
    state = ProjectState(name=f"{p} r{revision}", portfolio=PORTFOLIO, source="jira", external_id=p)
    return ProjectChanged(
        project_key=key(p),
        portfolio=PORTFOLIO,
        revision=revision,
        submission_id=f"sub-{p}-{revision}",
        occurred_at=NOW,
        project=state,
    )


def record(event: Any, event_id: str, offset: int) -> Record:
    message = event_message(
        topic=NAMES(Topic.PROJECTS),
        key=PORTFOLIO,
        event=event,
        event_id=event_id,
        source="t",
        time=NOW,
    )
    return consumed(message, offset)


@pytest.fixture
async def pool(
    database: DatabaseSettings, reporting_pool: asyncpg.Pool[Any]
) -> AsyncIterator[tuple[asyncpg.Pool[Any], list[str]]]:
    """Reporting's pool with one connection, and the statements the handler sends on it (the
    connection's query log: BEGIN is one of them, a COMMIT is not logged); no rows of this
    file's portfolio."""
    for table in ("projects", "projects_history", "warehouse_pending"):
        column = "portfolio" if table != "warehouse_pending" else "project_key"
        value = PORTFOLIO if table != "warehouse_pending" else f"{PORTFOLIO}/%"
        operator = "=" if table != "warehouse_pending" else "LIKE"
        await reporting_pool.execute(f"DELETE FROM {table} WHERE {column} {operator} $1", value)
    one = await create_pool(
        service_url(database, "reporting"),
        schema="reporting",
        application_name="reporting-lane-tests",
        min_size=1,
        max_size=1,
    )
    sent: list[str] = []
    async with one.acquire() as conn:
        conn.add_query_logger(lambda q: sent.append(q.query))
    try:
        yield one, sent
    finally:
        await one.close()


def handler(pool: asyncpg.Pool[Any]) -> ReportingHandler:
    return ReportingHandler(
        lambda: ReportingUnitOfWork(pool),
        NAMES,
        lambda: NOW,
        change_delay=CHANGE_DELAY,
        derived_wait=DERIVED_WAIT,
    )


async def state(pool: asyncpg.Pool[Any]) -> dict[str, Any]:
    """What the batches left: each project's revision and name, its versions, its mark."""
    rows = await pool.fetch(
        "SELECT p.project_key, p.revision, p.name, (SELECT count(*) FROM projects_history h"
        " WHERE h.project_key = p.project_key) AS versions,"
        " w.due_at, w.mark FROM projects p LEFT JOIN warehouse_pending w USING (project_key)"
        " WHERE p.portfolio = $1 ORDER BY p.project_key",
        PORTFOLIO,
    )
    return {r["project_key"]: dict(r) for r in rows}


def own(sent: list[str]) -> list[str]:
    """The statements sent, without asyncpg's own (its reads of the server's types, made the
    first time a connection meets a type, with JIT turned off around them)."""
    return [q for q in sent if "typeinfo_tree" not in q and "'jit'" not in q]


def duplicates_counted() -> float:
    value: float = metrics.DUPLICATES.labels("reporting")._value.get()
    return value


async def test_a_batch_of_project_changes_is_one_statement_and_its_own_transaction(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """Two records (one of two changes) are applied in one statement without a BEGIN: the
    rows, a version each, the inbox's claims, and marks due at the derived wait (the new
    projects have no score or plan yet). Delivered again, nothing changes and both records
    count as duplicates."""
    one, sent = pool
    batch = [
        record(
            ProjectsChanged(portfolio=PORTFOLIO, changes=[changed("A"), changed("B")]), "l:1", 0
        ),
        record(changed("C"), "l:2", 1),
    ]
    sent.clear()
    await handler(one).handle(batch)
    assert [q[:16] for q in own(sent)] == ["WITH claimed AS "]
    after = await state(one)
    assert sorted(after) == [key("A"), key("B"), key("C")]
    written = {k: (r["revision"], r["versions"], r["due_at"]) for k, r in after.items()}
    assert written == dict.fromkeys(after, (1, 1, NOW + DERIVED_WAIT))
    assert (
        await one.fetchval(
            "SELECT count(*) FROM inbox WHERE event_id = ANY($1::text[])", ["l:1", "l:2"]
        )
        == 2
    )

    counted = duplicates_counted()
    await handler(one).handle(batch)
    assert await state(one) == after
    assert duplicates_counted() == counted + 2


async def test_only_the_rows_a_batch_writes_are_marked(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """A change older than the stored row (read after a later one) writes nothing and makes
    no mark; the newest of a project's changes in one batch is the one applied."""
    one, _ = pool
    await handler(one).handle([record(changed("A", 2), "o:2", 0)])
    await one.execute("DELETE FROM warehouse_pending WHERE project_key = $1", key("A"))
    await handler(one).handle([record(changed("A", 1), "o:1", 1)])
    assert {
        k: (r["revision"], r["versions"], r["due_at"]) for k, r in (await state(one)).items()
    } == {key("A"): (2, 1, None)}
    await handler(one).handle(
        [record(changed("B", 3), "o:b3", 2), record(changed("B", 2), "o:b2", 3)]
    )
    b = (await state(one))[key("B")]
    assert (b["revision"], b["name"], b["versions"]) == (3, "B r3", 1)


async def test_a_change_to_a_row_with_its_score_and_plan_is_due_within_the_change_delay(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """The statement decides a mark's time from the row it wrote: a project whose score and
    plan are there already (the other consumer wrote them) is due within the change delay."""
    one, _ = pool
    await one.execute(
        "INSERT INTO projects (project_key, portfolio, score, ranking_version, plan_status,"
        " plan_version) VALUES ($1, $2, 50, 1, 'planned', 1)",
        key("S"),
        PORTFOLIO,
    )
    await handler(one).handle([record(changed("S"), "s:1", 0)])
    assert (await state(one))[key("S")]["due_at"] == NOW + CHANGE_DELAY


async def test_any_other_batch_goes_through_the_transaction(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """A batch with a record that cannot be read is applied in a transaction: its project
    change as before, the record dead-lettered through the outbox."""
    one, sent = pool
    before = await one.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    unreadable = Record(
        topic=NAMES(Topic.PROJECTS),
        partition=0,
        offset=1,
        key=b"lane",
        value=b"{not json",
        headers=(),
        timestamp_ms=0,
    )
    sent.clear()
    await handler(one).handle([record(changed("D"), "d:1", 0), unreadable])
    assert own(sent)[0] == "BEGIN;"
    d = (await state(one))[key("D")]
    assert (d["revision"], d["versions"], d["due_at"]) == (1, 1, NOW + DERIVED_WAIT)
    letters = await one.fetch("SELECT topic, headers FROM outbox WHERE id > $1", before)
    assert [r["topic"] for r in letters] == [NAMES(Topic.DEAD_LETTERS)]
    assert json.loads(letters[0]["headers"])


async def test_a_record_with_no_change_goes_through_the_transaction_and_is_claimed(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """A record that holds no change has no effect but its inbox record: the batch goes through
    the transaction, which claims it with the rest."""
    one, sent = pool
    empty = ProjectsChanged(portfolio=PORTFOLIO, changes=[])
    sent.clear()
    await handler(one).handle([record(changed("E"), "e:1", 0), record(empty, "e:0", 1)])
    assert own(sent)[0] == "BEGIN;"
    assert (await state(one))[key("E")]["revision"] == 1
    claimed = await one.fetch(
        "SELECT event_id FROM inbox WHERE event_id = ANY($1::text[]) ORDER BY event_id",
        ["e:0", "e:1"],
    )
    assert [r["event_id"] for r in claimed] == ["e:0", "e:1"]


async def test_a_partly_redelivered_batch_applies_its_fresh_changes_only(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """A record delivered again beside a new one: the new one is applied, the other counts as
    a duplicate and leaves its project's row and version as they were."""
    one, _ = pool
    await handler(one).handle([record(changed("A"), "r:a", 0)])
    before = (await state(one))[key("A")]
    counted = duplicates_counted()
    await handler(one).handle([record(changed("A"), "r:a", 0), record(changed("B"), "r:b", 1)])
    after = await state(one)
    assert after[key("A")] == before
    assert (after[key("B")]["revision"], after[key("B")]["versions"]) == (1, 1)
    assert duplicates_counted() == counted + 1


async def test_an_older_fresh_change_beside_its_newer_one_delivered_again_changes_nothing(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """The newest change of a project is chosen before the claim: when it was applied before
    and an older one is new, the older one is claimed and, older than the row, writes nothing,
    as the transaction's version guard leaves it."""
    one, _ = pool
    await handler(one).handle([record(changed("A", 2), "w:2", 0)])
    before = (await state(one))[key("A")]
    again = [record(changed("A", 1), "w:1", 1), record(changed("A", 2), "w:2", 0)]
    await handler(one).handle(again)
    assert (await state(one))[key("A")] == before
    assert await one.fetchval("SELECT count(*) FROM inbox WHERE event_id = 'w:1'") == 1


async def test_a_withdrawn_project_is_due_within_the_change_delay(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """A withdrawn project waits for no score or plan: its record is due within the change
    delay."""
    one, _ = pool
    gone = changed("W").model_copy(update={"withdrawn": True})
    await handler(one).handle([record(gone, "g:1", 0)])
    assert (await state(one))[key("W")]["due_at"] == NOW + CHANGE_DELAY


async def test_a_mark_the_feed_claimed_is_renumbered_and_an_unclaimed_one_only_moves_earlier(
    pool: tuple[asyncpg.Pool[Any], list[str]],
) -> None:
    """The statement's marks keep the rules of the marking statement: a mark the feed has
    claimed gets a new number and is unclaimed (the record being built may miss the change);
    an unclaimed one is rewritten only to be due earlier."""
    one, _ = pool
    await handler(one).handle([record(changed("A"), "m:1", 0)])
    first = (await state(one))[key("A")]
    async with ReportingUnitOfWork(one) as uow:
        claimed = await uow.read_model.claim_warehouse_marks(NOW + DERIVED_WAIT, 10)
    assert (key("A"), first["mark"]) in claimed
    await handler(one).handle([record(changed("A", 2), "m:2", 1)])
    second = (await state(one))[key("A")]
    assert second["mark"] != first["mark"]
    assert second["due_at"] == first["due_at"]  # the earlier of the two times is kept
    assert (
        await one.fetchval("SELECT claimed FROM warehouse_pending WHERE project_key = $1", key("A"))
        is False
    )
    # Unclaimed and due at the derived wait: a later change's same time leaves it as it is.
    await handler(one).handle([record(changed("A", 3), "m:3", 2)])
    assert (await state(one))[key("A")]["mark"] == second["mark"]
