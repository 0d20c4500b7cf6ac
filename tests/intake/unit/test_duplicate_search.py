"""Intake's duplicate search with the fake unit of work of the handler's tests: the projects a
change opens are searched after it is published, against the names the search keeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.intake.domain import StoredProject
from services.intake.duplicates import DuplicateSearch
from shared.consumer_record import Record
from shared.contracts.events import DuplicatesFound, ProjectState
from shared.outbox import OutboxMessage
from shared.topics import Topic
from tests.helpers import submission
from tests.intake.unit.test_handler import NAMES, FakeUnitOfWork, changes, handler, record


class Feed:
    """Intake's handler and the search on one fake database: what the handler publishes on the
    projects topic is read back by the search, at offsets that follow on (unless told)."""

    def __init__(self, **search: Any) -> None:
        self.uow = FakeUnitOfWork()
        self.intake = handler(self.uow)
        self.search = DuplicateSearch(
            lambda: self.uow,  # type: ignore[arg-type, return-value]
            NAMES,
            lambda: datetime(2026, 11, 25, tzinfo=UTC),
            **search,
        )
        self.offset = 0  # of the submissions
        self.read = 0  # how many project records the search has been given
        self.next_offset = 0  # of the projects topic

    async def submit(self, *messages: dict[str, Any]) -> None:
        await self.intake.handle([record(m, self.offset + i) for i, m in enumerate(messages)])
        self.offset += len(messages)

    def unread(self) -> list[OutboxMessage]:
        published = [m for m in self.uow.published if m.topic == NAMES(Topic.PROJECTS)]
        return published[self.read :]

    async def search_unread(self, *, skip: int = 0) -> None:
        """Give the search the project records it has not read, ``skip`` offsets on."""
        unread = self.unread()
        self.next_offset += skip
        records = [
            Record(
                m.topic,
                0,
                self.next_offset + i,
                m.key,
                m.value,
                tuple((k, v.encode()) for k, v in m.headers.items()),
                0,
            )
            for i, m in enumerate(unread)
        ]
        await self.search.handle(records)
        self.read += len(unread)
        self.next_offset += len(unread)

    def found(self) -> dict[str, list[tuple[str, float]]]:
        """Each project searched (by external id, the last search of it) -> its matches."""
        out: dict[str, list[tuple[str, float]]] = {}
        for m in self.uow.published:
            if m.topic == NAMES(Topic.DUPLICATES):
                for entry in DuplicatesFound.model_validate_json(m.value).projects:
                    out[entry.project_key.rsplit("/", 1)[1]] = [
                        (d.external_id, d.similarity) for d in entry.possible_duplicates
                    ]
        return out


async def test_a_project_is_accepted_at_once_and_its_near_duplicates_found_after() -> None:
    feed = Feed()
    for external_id, name in [("A", "Checkout rewrite"), ("B", "Rewrite the checkout!")]:
        await feed.submit(submission(external_id, name=name))
        # The submission went out without a search: no matches in its change, no notes.
        assert changes(feed.uow)[-1]["possible_duplicates"] == []
        assert not feed.uow.projects.log_rows[-1].reasons
        assert external_id not in feed.found()
        await feed.search_unread()
    await feed.submit(submission("C", name="Warehouse robots"))
    await feed.search_unread()
    found = feed.found()
    assert found["A"] == []
    assert found["C"] == []
    ((match, similarity),) = found["B"]
    assert match == "A"
    assert similarity >= 0.85
    messages = [m for m in feed.uow.published if m.topic == NAMES(Topic.DUPLICATES)]
    assert [m.key for m in messages] == [b"retail"] * 3
    for message in messages:
        assert message.headers["ce_type"] == DuplicatesFound.TYPE
        parsed = DuplicatesFound.model_validate_json(message.value)
        assert message.value == parsed.model_dump_json().encode()


async def test_the_names_are_read_once_and_follow_the_changes_read_back() -> None:
    """The search reads a portfolio's names at its first batch and then keeps them, following
    the changes it reads: a rename, a withdrawal, a new project, each seen by the next
    search without reading the portfolio again."""
    feed = Feed()
    await feed.submit(submission("A", name="Checkout rewrite"), submission("W", name="Ledger"))
    await feed.search_unread()
    await feed.submit(submission("A", name="Warehouse robots", revision=2))
    await feed.submit(submission("W", revision=2, action="withdraw"))
    await feed.search_unread()
    await feed.submit(submission("B", name="Robots, warehouse"), submission("L", name="Ledger"))
    await feed.search_unread()
    assert feed.uow.projects.names_read == ["retail"]
    found = feed.found()
    assert [m for m, _ in found["B"]] == ["A"]  # its new name
    assert found["L"] == []  # W was withdrawn


async def test_a_gap_in_the_partition_has_the_names_read_again() -> None:
    feed = Feed()
    await feed.submit(submission("A", name="Checkout rewrite"))
    await feed.search_unread()
    # Records the search did not see (another consumer took the partition meanwhile): a
    # project intake stored then, which the kept names lack.
    feed.uow.projects.rows["retail/jira/R"] = StoredProject(
        revision=1,
        withdrawn=False,
        state=ProjectState.model_validate(
            {
                **submission("R")["project"],
                "portfolio": "retail",
                "source": "jira",
                "external_id": "R",
                "name": "Warehouse robots",
            }
        ),
        portfolio="retail",
        external_id="R",
    )
    await feed.submit(submission("B", name="Robots warehouse"))
    await feed.search_unread(skip=3)
    assert feed.uow.projects.names_read == ["retail", "retail"]
    assert [m for m, _ in feed.found()["B"]] == ["R"]


async def test_a_batch_that_fails_is_searched_again_from_the_stored_names() -> None:
    feed = Feed()
    await feed.submit(submission("A", name="Checkout rewrite"))
    await feed.search_unread()
    await feed.submit(submission("B", name="Checkout rewrite!"))
    emit = feed.uow.emit

    async def failing(messages: Any) -> None:
        raise ConnectionResetError("lost the database")

    feed.uow.emit = failing  # type: ignore[method-assign]
    read_before, offset_before = feed.read, feed.next_offset
    with pytest.raises(ConnectionResetError):
        await feed.search_unread()
    feed.uow.emit = emit  # type: ignore[method-assign]
    feed.read, feed.next_offset = read_before, offset_before  # redelivered
    await feed.search_unread()
    # The names were read again (the failed batch had changed the kept ones), and stored B
    # is B itself, not its match.
    assert feed.uow.projects.names_read == ["retail", "retail"]
    assert [m for m, _ in feed.found()["B"]] == ["A"]


async def test_changes_read_twice_publish_their_matches_once() -> None:
    feed = Feed()
    await feed.submit(submission("A", name="Checkout rewrite"))
    await feed.submit(submission("B", name="Checkout rewrite"))
    await feed.search_unread()
    feed.read, feed.next_offset = 0, 0  # delivered again after a crash
    await feed.search_unread()
    assert len([m for m in feed.uow.published if m.topic == NAMES(Topic.DUPLICATES)]) == 1


async def test_stored_names_ahead_of_the_changes_are_not_taken_back() -> None:
    """Names read from intake's table are as of now, later than the changes being read back:
    an older change of a project leaves the newer name it has, and a project opened is
    compared, by the name it opened with, with the others as they are then (one opened after it
    among them)."""
    feed = Feed()
    await feed.submit(submission("X", name="Checkout rewrite"))
    await feed.submit(submission("X", name="Warehouse robots", revision=2))
    await feed.submit(submission("N", name="Checkout rewrite"))
    await feed.submit(submission("R", name="Robots warehouse"))
    await feed.search_unread()  # the names read: X at revision 2; its revision 1 is older
    found = feed.found()
    assert found["N"] == []  # X is named "Warehouse robots" now
    assert [m for m, _ in found["R"]] == ["X"]
    assert [m for m, _ in found["X"]] == ["N"]  # as it opened, "Checkout rewrite"


async def test_what_a_batch_found_is_published_in_records_of_a_bounded_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DuplicatesFound, "MAX_PROJECTS", 2)
    feed = Feed()
    await feed.submit(*(submission(f"P{i}", name=f"Checkout rewrite {i}") for i in range(5)))
    await feed.search_unread()
    records = [m for m in feed.uow.published if m.topic == NAMES(Topic.DUPLICATES)]
    assert [len(json.loads(m.value)["projects"]) for m in records] == [2, 2, 1]
    assert len({m.headers["ce_id"] for m in records}) == 3
    assert [m for m, _ in feed.found()["P4"]] == ["P0", "P1", "P2"]
