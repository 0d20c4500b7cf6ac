"""Intake's duplicate search: reads back the project changes intake published and publishes
the possible duplicates of each project they open (``DuplicatesFound``), after the change, so
that a submission never waits for the search (docs/intake.md, "Possible duplicates")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from services.intake.domain import PortfolioNames, find_duplicates
from services.intake.repository import IntakeTransaction
from shared.admission import admit, per_project
from shared.cloudevents import batched_messages
from shared.consumer_record import Record
from shared.contracts.events import (
    DuplicatesFound,
    ProjectChanged,
    ProjectDuplicates,
    ProjectsChanged,
)
from shared.errors import Reason
from shared.events_io import decode_typed
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "intake"
# What the search's inbox ids put before a change's event id: apart from the submissions' ids.
INBOX_PREFIX = "duplicates:"


def _decode(record: Record) -> tuple[str, Any] | list[Reason]:
    decoded = decode_typed(record, ProjectChanged, ProjectsChanged)
    if isinstance(decoded, list):
        return decoded
    event_id, event = decoded
    return f"{INBOX_PREFIX}{event_id}", event


class DuplicateSearch:
    """Finds the possible duplicates of the projects each batch of changes opens, against the
    names of their portfolio's open projects as the search knows them, and publishes them in
    the batch's transaction.

    The names of the ``kept_views`` portfolios most recently changed are kept between batches
    and follow the changes as they are read, so a batch compares its new names without reading
    the portfolio: a portfolio's changes come in order on one partition. A portfolio's names
    are read from intake's table when it is not kept: at a start, after a gap in its
    partition's offsets (read by another consumer meanwhile), or after a batch that failed."""

    def __init__(
        self,
        uow: Callable[[], IntakeTransaction],
        topics: TopicNames,
        clock: Callable[[], datetime],
        *,
        kept_views: int = 64,
    ) -> None:
        self._uow = uow
        self._topics = topics
        self._clock = clock
        # portfolio -> (the partition its changes came on, its names)
        self._views: dict[str, tuple[tuple[str, int], PortfolioNames]] = {}
        self._kept_views = kept_views
        self._next: dict[tuple[str, int], int] = {}  # the offset expected next on a partition

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        self._drop_after_gaps(records)
        changes: dict[str, list[ProjectChanged]] = {}
        partitions: dict[str, tuple[str, int]] = {}
        views: dict[str, PortfolioNames] = {}
        async with self._uow() as uow:
            batch = await admit(
                uow,
                records,
                _decode,
                consumer=SERVICE,
                dead_letter_topic=self._topics(Topic.DEAD_LETTERS),
                now=now,
            )
            for record, event in batch.items:
                for change in per_project([event], ProjectsChanged, ProjectChanged):
                    changes.setdefault(change.portfolio, []).append(change)
                    partitions[change.portfolio] = (record.topic, record.partition)
            # Taken out of the cache until the batch commits: the search changes them.
            for portfolio in changes:
                kept = self._views.pop(portfolio, None)
                if kept is not None and kept[0] == partitions[portfolio]:
                    views[portfolio] = kept[1]
            if missing := changes.keys() - views.keys():
                views |= await uow.projects.portfolio_names(missing)
            out: list[OutboxMessage] = list(batch.dead_letters)
            topic = self._topics(Topic.DUPLICATES)
            for portfolio, portfolio_changes in changes.items():
                view = views.setdefault(portfolio, PortfolioNames())
                found = find_duplicates(view, portfolio_changes)
                if found:
                    out += duplicates_found(topic, portfolio, found, portfolio_changes[0], now)
            await uow.emit(out)
        self._views.update({p: (partitions[p], view) for p, view in views.items()})
        for stale in list(self._views)[: max(0, len(self._views) - self._kept_views)]:
            del self._views[stale]
        for record in records:
            self._next[(record.topic, record.partition)] = record.offset + 1

    def _drop_after_gaps(self, records: Sequence[Record]) -> None:
        """Forget the names of the portfolios of each partition whose records do not follow on
        from the last ones this search read: it missed changes in between."""
        first: dict[tuple[str, int], int] = {}
        for record in records:
            first.setdefault((record.topic, record.partition), record.offset)
        gaps = {tp for tp, offset in first.items() if self._next.get(tp, offset) != offset}
        if gaps:
            for portfolio in [p for p, (tp, _) in self._views.items() if tp in gaps]:
                del self._views[portfolio]


def duplicates_found(
    topic: str,
    portfolio: str,
    found: Sequence[ProjectDuplicates],
    first: ProjectChanged,
    now: datetime,
) -> list[OutboxMessage]:
    """``DuplicatesFound`` records of what one batch found in a portfolio, keyed by the
    portfolio. The records' ids come from the batch's first change's submission: a change is
    read back once (the inbox), so no two batches share one."""
    return batched_messages(
        topic=topic,
        key=portfolio,
        empty=DuplicatesFound(portfolio=portfolio, projects=[]),
        entries=[f.model_dump_json().encode() for f in found],
        max_entries=DuplicatesFound.MAX_PROJECTS,
        max_bytes=DuplicatesFound.MAX_BYTES,
        event_id=f"intake-duplicates:{portfolio}:{first.submission_id}:{first.revision}",
        source="pmo/intake",
        time=now,
    )
