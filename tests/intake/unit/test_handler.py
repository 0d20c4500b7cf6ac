"""Intake's handler with a fake unit of work: the use case's decisions, without infrastructure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import pytest

from services.intake.domain import PortfolioNames, PortfolioView, StoredProject
from services.intake.handlers import IntakeHandler
from services.intake.repository import LogEntry, OpenedBatch
from shared import deadletter
from shared.consumer_record import Record
from shared.contracts.events import ProjectChanged, ProjectsChanged, ProjectState
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames
from tests.helpers import key_of, submission

NAMES = TopicNames("")


class FakeProjects:
    def __init__(self) -> None:
        self.rows: dict[str, StoredProject] = {}
        self.log_rows: list[LogEntry] = []
        self.versions: dict[str, int] = {}
        self.views_read: list[str] = []  # portfolios whose views were read
        self.names_read: list[str] = []  # portfolios whose names the duplicate search read
        self.view_reads = 0  # the reads themselves: each a statement
        self.fail_next_log = False

    async def save(self, projects: Iterable[tuple[str, StoredProject]]) -> None:
        self.rows.update(projects)

    async def log(self, entries: Sequence[LogEntry]) -> None:
        if self.fail_next_log:
            self.fail_next_log = False
            raise ConnectionResetError("lost the database")
        self.log_rows += entries

    async def portfolio_views(self, portfolios: Iterable[str]) -> dict[str, PortfolioView]:
        self.views_read += list(portfolios)
        self.view_reads += 1
        views: dict[str, PortfolioView] = {}
        for p in self.rows.values():
            if p.state.portfolio in portfolios and not p.withdrawn and p.state.depends_on:
                view = views.setdefault(p.state.portfolio, PortfolioView())
                view.dependencies[p.state.external_id] = list(p.state.depends_on)
        return views

    async def portfolio_names(self, portfolios: Iterable[str]) -> dict[str, PortfolioNames]:
        self.names_read += list(portfolios)
        views: dict[str, PortfolioNames] = {}
        for key, p in self.rows.items():
            if p.portfolio in portfolios:
                view = views.setdefault(p.portfolio, PortfolioNames())
                if p.withdrawn or p.state is None:
                    view.revisions[key] = p.revision
                else:
                    view.add_name(key, p.state.external_id, p.state.name, p.revision)
        return views


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
        self._before = (dict(self.projects.rows), dict(self.projects.versions))
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
        else:  # rolled back
            self.projects.rows, self.projects.versions = self._before

    async def claim(self, event_ids: Sequence[str]) -> set[str]:
        fresh = set(event_ids) - self.inbox - self._claimed
        self._claimed |= fresh
        return fresh

    async def open_batch(
        self, claims: Sequence[tuple[str, str | None]], keys: Iterable[str]
    ) -> OpenedBatch:
        fresh = await self.claim([event_id for event_id, _ in claims])
        counted = {p for event_id, p in claims if p is not None and event_id in fresh}
        for p in counted:
            self.projects.versions[p] = self.projects.versions.get(p, 0) + 1
        return OpenedBatch(
            fresh,
            {k: self.projects.rows[k] for k in keys if k in self.projects.rows},
            {p: self.projects.versions[p] for p in counted},
        )

    async def release(self, event_ids: Sequence[str]) -> None:
        self._claimed -= set(event_ids)

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


def changes(uow: FakeUnitOfWork) -> list[dict[str, Any]]:
    """Every project event published, in order, each entry as the ``ProjectChanged`` it stands
    for (as JSON, as a consumer would read it)."""
    return [
        json.loads(e.model_dump_json())
        for m in uow.published
        if m.topic == NAMES(Topic.PROJECTS)
        for e in ProjectsChanged.model_validate_json(m.value).projects()
    ]


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
    events = changes(uow)
    assert len(uow.published) == 1  # one portfolio: one record
    assert [(e["revision"], e["previous_stage"]) for e in events] == [
        (1, None),
        (2, "proposal"),
        (3, "approved"),
    ]


async def test_a_refused_submission_can_be_sent_again_once_fixed_and_is_not_refused_twice() -> None:
    uow = FakeUnitOfWork()
    await handler(uow).handle([record(submission("A", revision=1, depends_on=["B"]), 0)])
    looping = submission("B", revision=1, depends_on=["A"])
    await handler(uow).handle([record(looping, 1)])
    await handler(uow).handle([record(looping, 1)])  # redelivered: no second dead letter
    letters = [m for m in uow.published if m.topic == NAMES(Topic.DEAD_LETTERS)]
    assert len(letters) == 1
    reasons = json.loads(letters[0].headers[deadletter.REASONS])
    assert reasons[0]["code"] == "dependency_cycle"
    assert "B -> A -> B" in reasons[0]["message"]
    # The same submission id, fixed and resent, is a new attempt (the refusal had no effect).
    fixed = dict(looping, project={**looping["project"], "depends_on": []})
    await handler(uow).handle([record(fixed, 2)])
    assert "retail/jira/B" in uow.projects.rows


def _cycle_refused(uow: FakeUnitOfWork) -> bool:
    """Whether the last record published is a dead letter for a dependency cycle."""
    last = uow.published[-1]
    if last.topic != NAMES(Topic.DEAD_LETTERS):
        return False
    return bool(json.loads(last.headers[deadletter.REASONS])[0]["code"] == "dependency_cycle")


async def test_portfolio_views_are_kept_between_batches_while_nobody_else_changes_them() -> None:
    uow = FakeUnitOfWork()
    intake = handler(uow)
    await intake.handle([record(submission("A", depends_on=["B"]), 0)])
    await intake.handle([record(submission("B", depends_on=["A"]), 1)])
    assert uow.projects.views_read == ["retail"], "the second batch used the kept view"
    assert uow.projects.view_reads == 1, "and made no read of no portfolios"
    assert _cycle_refused(uow), "the kept view has A's dependency"

    # Another process adds a project: the count moves past the kept view's, which is reread.
    uow.projects.rows["retail/jira/C"] = StoredProject(
        revision=1,
        withdrawn=False,
        state=ProjectState.model_validate(
            {
                **submission("C")["project"],
                "portfolio": "retail",
                "source": "jira",
                "external_id": "C",
                "depends_on": ["D"],
            }
        ),
        portfolio="retail",
        external_id="C",
    )
    uow.projects.versions["retail"] += 1
    await intake.handle([record(submission("D", depends_on=["C"]), 2)])
    assert uow.projects.views_read == ["retail", "retail"]
    assert _cycle_refused(uow), "the view read again has C's dependency"


async def test_a_batch_that_rolls_back_leaves_no_trace_in_the_kept_views() -> None:
    uow = FakeUnitOfWork()
    intake = handler(uow)
    await intake.handle([record(submission("A"), 0)])
    uow.projects.fail_next_log = True
    with pytest.raises(ConnectionResetError):
        await intake.handle([record(submission("B", depends_on=["E"]), 1)])
    await intake.handle([record(submission("E", depends_on=["B"]), 2)])
    # B was never committed: E closes no cycle with it, and the view was read again.
    assert not _cycle_refused(uow)
    assert "retail/jira/E" in uow.projects.rows
    assert uow.projects.views_read == ["retail", "retail"]


async def test_views_are_kept_for_the_portfolios_most_recently_submitted_to() -> None:
    uow = FakeUnitOfWork()
    intake = IntakeHandler(
        lambda: uow,  # type: ignore[arg-type, return-value]
        NAMES,
        lambda: datetime(2026, 11, 25, tzinfo=UTC),
        kept_views=2,
    )
    for offset, portfolio in enumerate(["retail", "wholesale", "retail", "online"]):
        await intake.handle([record(submission(f"P{offset}", portfolio=portfolio), offset)])
    # retail's view was kept for its second batch; online's arrival dropped wholesale's, the
    # least recently used, so wholesale is read again when it comes back, and retail is not.
    assert uow.projects.views_read == ["retail", "wholesale", "online"]
    await intake.handle([record(submission("P4", portfolio="wholesale"), 4)])
    await intake.handle([record(submission("P5", portfolio="online"), 5)])
    assert uow.projects.views_read == ["retail", "wholesale", "online", "wholesale"]


async def test_accepted_submissions_go_out_a_record_per_portfolio_as_the_contract_writes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One batch over two portfolios: a ``ProjectsChanged`` per portfolio, keyed by it, its
    entries in the order they were applied, byte for byte what the contract serialises, and
    split when a portfolio has more entries than a record may carry. The ids come from each
    portfolio's first accepted submission, which no other batch can accept again: a redelivered
    batch is all duplicates and publishes nothing, and the next batch's ids are new."""
    monkeypatch.setattr(ProjectsChanged, "MAX_PROJECTS", 2)

    def sid(n: int) -> str:
        return f"00000000-0000-4000-8000-{n:012d}"

    uow = FakeUnitOfWork()
    sent = [
        submission("A", submission_id=sid(1)),
        submission("X", portfolio="energy", submission_id=sid(2)),
        submission("B", submission_id=sid(3)),
        submission("A", revision=2, submission_id=sid(4), stage="approved"),
    ]
    await handler(uow).handle([record(m, n) for n, m in enumerate(sent)])
    published = [m for m in uow.published if m.topic == NAMES(Topic.PROJECTS)]
    assert [(m.key, m.headers["ce_id"], m.headers["ce_type"]) for m in published] == [
        (b"retail", f"intake-projects:retail:{sid(1)}:0", ProjectsChanged.TYPE),
        (b"retail", f"intake-projects:retail:{sid(1)}:1", ProjectsChanged.TYPE),
        (b"energy", f"intake-projects:energy:{sid(2)}:0", ProjectsChanged.TYPE),
    ]
    for m in published:
        parsed = ProjectsChanged.model_validate_json(m.value)
        assert m.value == parsed.model_dump_json().encode()
        assert all(isinstance(e, ProjectChanged) for e in parsed.projects())
    assert [(e["project_key"], e["revision"], e["submission_id"]) for e in changes(uow)] == [
        ("retail/jira/A", 1, sid(1)),
        ("retail/jira/B", 1, sid(3)),
        ("retail/jira/A", 2, sid(4)),
        ("energy/jira/X", 1, sid(2)),
    ]
    await handler(uow).handle([record(m, n) for n, m in enumerate(sent)])
    assert len([m for m in uow.published if m.topic == NAMES(Topic.PROJECTS)]) == 3
    await handler(uow).handle([record(submission("C", submission_id=sid(5)), 4)])
    ids = [m.headers["ce_id"] for m in uow.published if m.topic == NAMES(Topic.PROJECTS)]
    assert ids[-1] == f"intake-projects:retail:{sid(5)}:0"
    assert len(set(ids)) == len(ids) == 4
