"""Reporting's use case: apply a batch of project, score, plan and dead-letter events to the
read model in one transaction. Each part of a row is guarded by its own version, so duplicate
and out-of-order events leave the same rows as an in-order replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.reporting.domain import DeadLetterRow, dead_letter_row
from services.reporting.repository import ReportingUnitOfWork
from shared import metrics
from shared.admission import Decoded, decode, per_project, rank_moves
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.capacity import PortfolioPlanned, ScenarioResult
from shared.contracts.events import (
    DuplicatesFound,
    PlansChanged,
    PortfolioProject,
    ProjectChanged,
    ProjectDuplicates,
    ProjectPlanned,
    ProjectsChanged,
    ProjectScored,
    RankingChanged,
    ScoresChanged,
)
from shared.contracts.scoring import ScoringAudit
from shared.errors import Reason
from shared.events_io import decode_event, decode_typed
from shared.loops import keep_running
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "reporting"


@dataclass(frozen=True, slots=True)
class _Decoder:
    topics: TopicNames

    def __call__(self, record: Record) -> tuple[str, Any] | list[Reason]:
        topic = self.topics.base(record.topic)
        if topic == Topic.DEAD_LETTERS:
            return dead_letter_row(record)
        if topic == Topic.SCORES:
            return decode_typed(record, ProjectScored, ScoresChanged, RankingChanged)
        if topic == Topic.PLANS:
            return decode_typed(record, ProjectPlanned, PlansChanged)
        if topic == Topic.SCORING_AUDIT:
            return decode_event(record, ScoringAudit)
        if topic == Topic.PLAN_SUMMARIES:
            return decode_event(record, PortfolioPlanned)
        if topic == Topic.SCENARIOS:
            return decode_event(record, ScenarioResult)
        if topic == Topic.DUPLICATES:
            return decode_event(record, DuplicatesFound)
        return decode_typed(record, ProjectChanged, ProjectsChanged)


class ReportingHandler:
    def __init__(
        self,
        uow: Callable[[], ReportingUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
        *,
        rank_delay: timedelta = timedelta(0),
        change_delay: timedelta = timedelta(0),
        derived_wait: timedelta = timedelta(0),
    ) -> None:
        """``rank_delay``: how long the warehouse record of a project that only moved in its
        portfolio's ranking may wait; ``change_delay``: how long that of a project whose own
        data changed may (shorter: what follows a change soon goes out in the same record);
        ``derived_wait``: how long that of a project still without its own data, score or
        plan (a new one) may wait for them (longer: its score and plan come from the derived
        services, seconds later under load, and it goes out once, with them)."""
        self._uow = uow
        self._topics = topics
        self._clock = clock
        self._rank_delay = rank_delay
        self._change_delay = change_delay
        self._derived_wait = derived_wait

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        decoded = decode(records, _Decoder(self._topics), consumer=SERVICE)
        if changes := _project_changes_alone(decoded):
            # The project lane's usual batch: one statement, its own transaction.
            soon = now + self._change_delay
            waiting = now + max(self._change_delay, self._derived_wait)
            claimed = await self._uow().apply_projects_alone(changes, (soon, waiting))
            if repeated := len(records) - claimed:  # delivered before, or twice in the batch
                metrics.DUPLICATES.labels(SERVICE).inc(repeated)
            return
        async with self._uow() as uow:
            batch = decoded.admit(
                await uow.claim(decoded.ids),
                consumer=SERVICE,
                dead_letter_topic=self._topics(Topic.DEAD_LETTERS),
                now=now,
            )
            events = [e for _, e in batch.items]
            projects = per_project(events, ProjectsChanged, ProjectChanged)
            scores = per_project(events, ScoresChanged, ProjectScored)
            plans = per_project(events, PlansChanged, ProjectPlanned)
            model = uow.read_model
            await model.apply_projects(projects)
            await model.apply_scores(scores)
            # After the scores: a move only replaces a rank of an older version (SQL guard).
            moves = rank_moves([e for e in events if isinstance(e, RankingChanged)])
            await model.move_ranks(moves)
            await model.apply_plans(plans)
            duplicates = _duplicates(events, projects)
            await model.apply_duplicates(duplicates)
            await model.add_dead_letters([e for e in events if isinstance(e, DeadLetterRow)])
            await model.add_audit([e for e in events if isinstance(e, ScoringAudit)])
            await model.add_summaries([e for e in events if isinstance(e, PortfolioPlanned)])
            await model.add_scenario_results([e for e in events if isinstance(e, ScenarioResult)])
            changed = {e.project_key for e in projects}
            changed.update(e.project_key for e in scores)
            changed.update(e.project_key for e in plans)
            # A project only moved in the ranking may wait; one whose own data changed, for the
            # change delay; one without its score or plan yet, until they arrive (within the
            # derived wait, which a move does not cut short). A mark keeps the earlier of its
            # due times, so a later change never delays a record.
            moved = now + self._rank_delay, now + max(self._rank_delay, self._derived_wait)
            due = dict.fromkeys((m.project_key for _, m in moves), moved)
            soon = now + self._change_delay
            waiting = now + max(self._change_delay, self._derived_wait)
            for k in changed:
                ready, unready = due.get(k, (soon, waiting))
                due[k] = (min(ready, soon), min(unready, waiting))
            await model.mark_for_warehouse(due)
            await uow.emit(batch.dead_letters)


def _project_changes_alone(decoded: Decoded[Any]) -> list[tuple[str, ProjectChanged]]:
    """A batch's project changes, each with its record's inbox id, when the batch holds
    nothing else (no other event, no record that could not be read or holds no change, no
    possible duplicates named in a change): the project lane's usual batch, applied in one
    statement (``ReportingUnitOfWork.apply_projects_alone``). Empty for any other batch."""
    changes: list[tuple[str, ProjectChanged]] = []
    for _, d in decoded.records:
        if not isinstance(d, tuple):
            return []
        event_id, event = d
        if isinstance(event, ProjectsChanged):
            entries = event.projects()
        elif isinstance(event, ProjectChanged):
            entries = [event]
        else:
            return []
        if not entries or any(e.possible_duplicates for e in entries):
            return []  # a record with no change is claimed by the transaction
        changes += [(event_id, e) for e in entries]
    return changes


def _duplicates(
    events: Sequence[object], projects: Sequence[ProjectChanged]
) -> list[tuple[str, ProjectDuplicates]]:
    """The possible duplicates among a batch's events, each with its portfolio: those intake
    found (``DuplicatesFound``), and those earlier versions of intake named in a project's
    change (none now: contracts.events.ProjectChange).

    A search that found none changes nothing shown: a revision's change shows no possible
    duplicates until some are found for it (``_KEEP_DUPLICATES``), and those of an earlier
    revision stay only while the project is at it. So an empty answer is not written; written,
    it made a version of the whole row and a warehouse mark for every new project, a quarter
    of the history's versions under a steady feed (docs/performance.md)."""
    found = [
        (e.portfolio, entry)
        for e in events
        if isinstance(e, DuplicatesFound)
        for entry in e.projects
        if entry.possible_duplicates
    ]
    found += [
        (
            e.portfolio,
            ProjectDuplicates(
                project_key=e.project_key,
                revision=e.revision,
                possible_duplicates=e.possible_duplicates,
            ),
        )
        for e in projects
        if e.possible_duplicates
    ]
    return found


class WarehouseFeed:
    """The compacted warehouse topic (``pmo.reporting.projects.v1``): one denormalised record
    per project, published for the projects batches marked once their marks are due, at most
    every ``interval`` seconds each. Coalescing is what bounds the topic: a new project moves
    the ranks of many others, and a project moved by each of the next hundred submissions is
    published once with its latest state, not a hundred times.

    A pass claims the due marks, reads and builds their records, then clears the marks that are
    unchanged and publishes their records in one short transaction: a batch marking a project
    meanwhile never waits for the building, and its mark (a new number) stays for the next
    pass. Replicas may build the same records; only one clears each mark."""

    def __init__(
        self,
        uow: Callable[[], ReportingUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
        *,
        interval: float = 0.5,
        batch: int = 5000,
    ) -> None:
        self._uow = uow
        self._topics = topics
        self._clock = clock
        self._interval = interval
        self._batch = batch

    async def publish_due(self) -> int:
        """Publish the records of up to ``batch`` due marks; returns how many marks were claimed."""
        now = self._clock()
        async with self._uow() as uow:
            marks = await uow.read_model.claim_warehouse_marks(now, self._batch)
        if not marks:
            return 0
        # After the claim has committed: a row read is at least as new as its mark, and a
        # batch changing it from now on renumbers the mark.
        async with self._uow() as uow:
            rows = await uow.read_model.denormalised([k for k, _ in marks])
        records = {row.project_key: self._record(row, now) for row in rows}
        async with self._uow() as uow:
            cleared = await uow.read_model.clear_warehouse_marks(marks)
            await uow.emit([records[k] for k, _ in marks if k in cleared and k in records])
        return len(marks)

    async def run(self) -> None:
        """Publish until cancelled."""

        async def publish() -> bool:
            return await self.publish_due() >= self._batch

        await keep_running("warehouse feed", publish, lambda: asyncio.sleep(self._interval))

    def _record(self, row: PortfolioProject, now: datetime) -> OutboxMessage:
        version = f"{row.revision}:{row.ranking_version}:{row.plan_version}"
        return event_message(
            topic=self._topics(Topic.PORTFOLIO_PROJECTS),
            key=row.project_key,
            event=row,
            event_id=f"reporting:{row.project_key}:{version}",
            source="pmo/reporting",
            time=now,
        )


class ScenarioRequests:
    """Use case of the API: record a capacity request and publish it, in one transaction."""

    def __init__(self, uow: Callable[[], ReportingUnitOfWork], topics: TopicNames) -> None:
        self._uow = uow
        self._topics = topics

    async def submit(self, portfolio: str, message: dict[str, Any], author: str) -> None:
        async with self._uow() as uow:
            await uow.read_model.add_scenario_request(
                message["request_id"], portfolio, message["action"], author
            )
            await uow.emit(
                [
                    OutboxMessage(
                        topic=self._topics(Topic.CAPACITY_COMMANDS),
                        key=portfolio.encode(),
                        value=json.dumps(message).encode(),
                        headers={"content-type": "application/json"},
                    )
                ]
            )
