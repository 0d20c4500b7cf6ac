"""A project's possible duplicates in the read model: they come from intake's duplicate search
(``DuplicatesFound``) on another consumer than the project's changes, in either order, and are
shown while the project is at the revision they were found for."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.reporting.handlers import ReportingHandler
from services.reporting.repository import ReportingUnitOfWork
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.events import (
    DuplicatesFound,
    PossibleDuplicate,
    ProjectChanged,
    ProjectDuplicates,
    ProjectState,
)
from shared.topics import Topic, TopicNames
from tests.helpers import consumed

pytestmark = pytest.mark.integration

NAMES = TopicNames("dups.")
NOW = datetime(2026, 11, 25, tzinfo=UTC)
PORTFOLIO = "dups"


def key(p: str) -> str:
    return f"{PORTFOLIO}/jira/{p}"


def record(topic: Topic, event: Any, event_id: str) -> Record:
    message = event_message(
        topic=NAMES(topic), key=PORTFOLIO, event=event, event_id=event_id, source="t", time=NOW
    )
    return consumed(message)


def changed(
    p: str, revision: int, *, opens: bool = True, duplicates: tuple[PossibleDuplicate, ...] = ()
) -> Record:
    event = ProjectChanged(
        project_key=key(p),
        portfolio=PORTFOLIO,
        revision=revision,
        submission_id=f"sub-{p}-{revision}",
        occurred_at=NOW,
        previous_stage=None if opens else "proposal",
        possible_duplicates=list(duplicates),
        project=ProjectState(
            name=f"{p} {revision}", portfolio=PORTFOLIO, source="jira", external_id=p
        ),
    )
    return record(Topic.PROJECTS, event, f"p:{p}:{revision}")


def match(p: str) -> PossibleDuplicate:
    return PossibleDuplicate(project_key=key(p), external_id=p, name=p, similarity=0.9)


def found(p: str, revision: int, *matches: str) -> Record:
    event = DuplicatesFound(
        portfolio=PORTFOLIO,
        projects=[
            ProjectDuplicates(
                project_key=key(p),
                revision=revision,
                possible_duplicates=[match(m) for m in matches],
            )
        ],
    )
    return record(Topic.DUPLICATES, event, f"d:{p}:{revision}:{','.join(matches)}")


@pytest.fixture
async def handle(reporting_pool: asyncpg.Pool[Any]) -> Any:
    for table in ("projects", "projects_history"):
        await reporting_pool.execute(f"DELETE FROM {table} WHERE portfolio = $1", PORTFOLIO)
    handler = ReportingHandler(lambda: ReportingUnitOfWork(reporting_pool), NAMES, lambda: NOW)

    async def handle(*records: Record) -> dict[str, tuple[int | None, list[str]]]:
        """Apply each record in a batch of its own; each project -> (revision, matches)."""
        for r in records:
            await handler.handle([r])
        rows = await reporting_pool.fetch(
            "SELECT project_key, revision, possible_duplicates FROM projects WHERE portfolio = $1",
            PORTFOLIO,
        )
        return {
            r["project_key"].rsplit("/", 1)[1]: (
                r["revision"],
                [d["external_id"] for d in json.loads(r["possible_duplicates"])],
            )
            for r in rows
        }

    return handle


async def test_found_after_the_change_they_are_shown(handle: Any) -> None:
    assert await handle(changed("A", 1), found("A", 1, "X", "Y")) == {"A": (1, ["X", "Y"])}


async def test_found_before_the_change_reaches_the_read_model_they_are_kept(handle: Any) -> None:
    assert await handle(found("A", 1, "X"), changed("A", 1)) == {"A": (1, ["X"])}


async def test_a_later_revision_goes_without_them(handle: Any) -> None:
    """Only a revision that opens a project is searched: the next revision shows none, and
    matches found for an earlier revision, arriving late, are not shown for it."""
    assert await handle(changed("A", 1), found("A", 1, "X"), changed("A", 2, opens=False)) == {
        "A": (2, [])
    }
    assert await handle(changed("B", 1), changed("B", 2, opens=False), found("B", 1, "X")) == {
        "A": (2, []),
        "B": (2, []),
    }


async def test_matches_of_an_older_revision_never_replace_newer_ones(handle: Any) -> None:
    """A project withdrawn and opened again is searched again: what was found for the later
    opening stays, whatever order the two searches' results come in."""
    result = await handle(changed("A", 3), found("A", 3, "Y"), found("A", 1, "X"))
    assert result == {"A": (3, ["Y"])}


async def test_a_change_naming_its_duplicates_is_still_applied(handle: Any) -> None:
    """Intake named a new project's possible duplicates in its change before it searched for
    them after it (contracts.events.ProjectChange); such changes are still on the topic."""
    assert await handle(changed("A", 1, duplicates=(match("X"),))) == {"A": (1, ["X"])}
    assert await handle(changed("A", 2, opens=False)) == {"A": (2, [])}


async def test_a_search_that_found_none_writes_nothing(
    handle: Any, reporting_pool: asyncpg.Pool[Any]
) -> None:
    """No possible duplicates for a revision is what its change shows already: the answer
    makes no version of the row and no warehouse mark, and, read ahead of its revision's
    change, leaves the earlier revision's matches shown while the project is still there."""
    assert await handle(changed("A", 1), found("A", 1, "X")) == {"A": (1, ["X"])}

    async def written() -> tuple[int, int]:
        versions = await reporting_pool.fetchval(
            "SELECT count(*) FROM projects_history WHERE project_key = $1", key("A")
        )
        updates = await reporting_pool.fetchval(
            "SELECT count(*) FROM projects WHERE project_key = $1 AND duplicates_revision = 1",
            key("A"),
        )
        return versions, updates

    before = await written()
    await reporting_pool.execute("DELETE FROM warehouse_pending WHERE project_key = $1", key("A"))
    assert await handle(found("A", 3)) == {"A": (1, ["X"])}
    assert await written() == before
    assert (
        await reporting_pool.fetchval(
            "SELECT count(*) FROM warehouse_pending WHERE project_key = $1", key("A")
        )
        == 0
    )
    assert await handle(changed("A", 3)) == {"A": (3, [])}


@pytest.mark.parametrize(
    "history",
    [
        # the rebuild's replay found this one: the second revision's change read before the
        # first's matches, which live came between them
        lambda p: [changed(p, 1), found(p, 1, "X"), changed(p, 2, opens=False)],
        # withdrawn and opened again, each opening searched
        lambda p: [
            changed(p, 1),
            found(p, 1, "X"),
            changed(p, 2, opens=False),
            changed(p, 3),
            found(p, 3, "Y"),
        ],
        # opened again, and nothing found for the second opening
        lambda p: [
            changed(p, 1),
            found(p, 1, "X"),
            changed(p, 2, opens=False),
            changed(p, 3),
            found(p, 3),
        ],
    ],
    ids=["revised", "opened-again", "opened-again-none-found"],
)
async def test_every_order_of_changes_and_matches_ends_as_the_in_order_replay(
    handle: Any, reporting_pool: asyncpg.Pool[Any], history: Callable[[str], list[Record]]
) -> None:
    """The project lane and the consumer of the matches read their topics at their own pace,
    live or in a rebuild's replay: the whole row (revision, the matches and the revision they
    were found for) ends the same in every order of a project's records."""
    orders = list(itertools.permutations(range(len(history("P")))))
    for n, order in enumerate(orders):
        records = history(f"P{n}")
        await handle(*(records[i] for i in order))
    rows = await reporting_pool.fetch(
        "SELECT project_key, revision, duplicates_revision, possible_duplicates FROM projects"
        " WHERE portfolio = $1",
        PORTFOLIO,
    )
    ends = {
        r["project_key"]: (r["revision"], r["duplicates_revision"], r["possible_duplicates"])
        for r in rows
    }
    in_order = ends[key("P0")]  # the first order is the records' own
    assert len(ends) == len(orders)
    assert {p: end for p, end in ends.items() if end != in_order} == {}
