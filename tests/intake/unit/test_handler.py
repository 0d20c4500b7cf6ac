"""Intake's handler with a fake unit of work: the use case's decisions, without infrastructure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from services.intake.domain import StoredProject
from services.intake.handlers import IntakeHandler
from services.intake.repository import LogEntry
from shared import deadletter
from shared.consumer_record import Record
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames
from tests.helpers import key_of, submission

NAMES = TopicNames("")


class FakeProjects:
    def __init__(self) -> None:
        self.rows: dict[str, StoredProject] = {}
        self.log_rows: list[LogEntry] = []

    async def load(self, keys: Iterable[str]) -> dict[str, StoredProject]:
        return {k: self.rows[k] for k in keys if k in self.rows}

    async def save(self, projects: Iterable[tuple[str, StoredProject]]) -> None:
        self.rows.update(projects)

    async def log(self, entries: Sequence[LogEntry]) -> None:
        self.log_rows += entries


class FakeUnitOfWork:
    """Commits on a clean exit, like the real one; state lives in memory."""

    def __init__(self) -> None:
        self.projects = FakeProjects()
        self.inbox: set[str] = set()
        self.published: list[OutboxMessage] = []
        self._pending: list[OutboxMessage] = []
        self._claimed: set[str] = set()

    async def __aenter__(self) -> Self:
        self._pending, self._claimed = [], set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.inbox |= self._claimed
            self.published += self._pending

    async def claim(self, event_ids: Sequence[str]) -> set[str]:
        fresh = set(event_ids) - self.inbox - self._claimed
        self._claimed |= fresh
        return fresh

    async def emit(self, messages: Sequence[OutboxMessage]) -> None:
        self._pending += messages

    async def lock(self, *names: str) -> None:
        return None


def record(message: dict[str, Any] | bytes, offset: int) -> Record:
    value = message if isinstance(message, bytes) else json.dumps(message).encode()
    key = None if isinstance(message, bytes) else key_of(message)
    return Record(NAMES(Topic.SUBMISSIONS), 0, offset, key, value, (), 0)


def handler(uow: FakeUnitOfWork) -> IntakeHandler:
    return IntakeHandler(lambda: uow, NAMES, lambda: datetime(2026, 11, 25, tzinfo=UTC))  # type: ignore[arg-type, return-value]


def topics(uow: FakeUnitOfWork) -> list[str]:
    return [m.topic for m in uow.published]


async def test_one_batch_accepts_refuses_ignores_and_deduplicates() -> None:
    uow = FakeUnitOfWork()
    first = submission("PRJ-1", revision=2)
    stale = submission("PRJ-1", revision=1)
    await handler(uow).handle(
        [record(first, 0), record(first, 1), record(b"nope", 2), record(stale, 3)]
    )
    assert sorted(topics(uow)) == sorted([NAMES(Topic.PROJECTS), NAMES(Topic.DEAD_LETTERS)])
    assert [(e.outcome, e.code) for e in uow.projects.log_rows] == [
        ("refused", "not_json"),
        ("accepted", None),
        ("ignored", "stale_revision"),
    ]
    assert uow.projects.rows["retail/jira/PRJ-1"].revision == 2

    # Delivered again after a crash: every id is in the inbox, nothing happens twice.
    await handler(uow).handle([record(first, 0), record(first, 1), record(b"nope", 2)])
    assert len(uow.published) == 2
    assert len(uow.projects.log_rows) == 3


async def test_an_illegal_transition_is_dead_lettered_with_both_stages() -> None:
    uow = FakeUnitOfWork()
    await handler(uow).handle([record(submission("PRJ-1", stage="active", revision=1), 0)])
    await handler(uow).handle([record(submission("PRJ-1", stage="idea", revision=2), 1)])
    letter = uow.published[-1]
    assert letter.topic == NAMES(Topic.DEAD_LETTERS)
    reasons = json.loads(letter.headers[deadletter.REASONS])
    assert reasons == [
        {
            "path": "project.stage",
            "code": "illegal_transition",
            "message": "stage cannot move from active to idea",
        }
    ]
    assert uow.projects.rows["retail/jira/PRJ-1"].state.stage == "active"


async def test_later_revisions_in_the_same_batch_build_on_earlier_ones() -> None:
    uow = FakeUnitOfWork()
    await handler(uow).handle(
        [
            record(submission("PRJ-1", stage="proposal", revision=1), 0),
            record(submission("PRJ-1", stage="approved", revision=2), 1),
            record(submission("PRJ-1", stage="active", revision=3), 2),
        ]
    )
    events = [json.loads(m.value) for m in uow.published]
    assert [(e["revision"], e["previous_stage"]) for e in events] == [
        (1, None),
        (2, "proposal"),
        (3, "approved"),
    ]
