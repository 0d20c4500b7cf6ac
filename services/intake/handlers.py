"""Intake's use case: validate a batch of submissions and apply it in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from services.intake.domain import (
    Accepted,
    Ignored,
    PortfolioView,
    StoredProject,
    decide,
    parse_submission,
)
from services.intake.repository import IntakeTransaction, LogEntry
from shared.admission import decode, refuse
from shared.cloudevents import batched_messages
from shared.consumer_record import Record
from shared.contracts.common import project_key
from shared.contracts.events import ProjectChange, ProjectChanged, ProjectsChanged
from shared.contracts.inbound import ProjectSubmission
from shared.deadletter import dead_letter_id
from shared.errors import Reason
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "intake"


def inbox_id(submission_id: str) -> str:
    """The id intake records a submission under in its inbox (its idempotency key)."""
    return f"intake:{submission_id}"


class IntakeHandler:
    """Applies submissions: accepted ones update the project and publish ``ProjectsChanged``;
    stale ones are logged; invalid ones are logged and dead-lettered with reasons."""

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
        # Each portfolio's dependencies as of its change count, kept between batches
        # (the portfolio's count tells whether another process changed it since), for the
        # ``kept_views`` portfolios most recently submitted to: memory stays bounded however
        # many portfolios there are, and a portfolio not kept is read when it comes back.
        self._views: dict[str, tuple[int, PortfolioView]] = {}
        self._kept_views = kept_views

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        dead_letters = self._topics(Topic.DEAD_LETTERS)
        versions: dict[str, int] = {}
        views: dict[str, PortfolioView] = {}
        async with self._uow() as uow:
            decoded = decode(records, _decode, consumer=SERVICE)
            claims = decoded.claims()
            opened = await uow.open_batch(
                [(event_id, s.portfolio if s else None) for event_id, s in claims],
                {project_key(s.portfolio, s.source, s.external_id) for _, s in claims if s},
            )
            batch = decoded.admit(
                opened.fresh, consumer=SERVICE, dead_letter_topic=dead_letters, now=now
            )
            log = [
                _entry(record, "refused", reasons, None, _sent_key(record), None)
                for record, reasons in batch.refused
            ]
            out = list(batch.dead_letters)
            stored, versions = opened.stored, opened.versions
            views = self._cached_views(versions)
            if missing := versions.keys() - views.keys():  # none: a statement saved
                views |= await uow.projects.portfolio_views(missing)
            changed: dict[str, StoredProject] = {}
            accepted: dict[str, list[ProjectChanged]] = {}
            for record, sub in batch.items:
                key = project_key(sub.portfolio, sub.source, sub.external_id)
                sid = str(sub.submission_id)
                view = views.setdefault(sub.portfolio, PortfolioView())
                decision = decide(sub, stored.get(key), view)
                if isinstance(decision, Accepted):
                    stored[key] = changed[key] = _stored(decision.event)
                    view.apply(decision.event)
                    accepted.setdefault(sub.portfolio, []).append(decision.event)
                    log.append(_entry(record, "accepted", [], sid, key, sub.revision))
                elif isinstance(decision, Ignored):
                    if decision.tombstone is not None:
                        stored[key] = changed[key] = decision.tombstone
                    reason = Reason(decision.code, decision.message)
                    log.append(_entry(record, "ignored", [reason], sid, key, sub.revision))
                else:
                    # A refusal has no effect: the submission id is forgotten so the same
                    # submission, once fixed or replayed, is processed again. The record's
                    # own dead-letter id keeps a redelivery from dead-lettering it twice.
                    await uow.release([inbox_id(sid)])
                    if not await uow.claim([dead_letter_id(SERVICE, record)]):
                        continue
                    out.append(
                        refuse(
                            record, decision.reasons, consumer=SERVICE, topic=dead_letters, now=now
                        )
                    )
                    log.append(_entry(record, "refused", decision.reasons, sid, key, sub.revision))
            await uow.projects.save(changed.items())
            await uow.projects.log(log)
            topic = self._topics(Topic.PROJECTS)
            for portfolio, events in accepted.items():
                out += projects_changed(topic, portfolio, events, now)
            await uow.emit(out)
        # Committed: the views are the portfolios as of their new counts.
        self._views.update(
            {p: (version, views.setdefault(p, PortfolioView())) for p, version in versions.items()}
        )
        # A batch's portfolios were taken out and put back: the oldest entries come first.
        for stale in list(self._views)[: max(0, len(self._views) - self._kept_views)]:
            del self._views[stale]

    def _cached_views(self, versions: dict[str, int]) -> dict[str, PortfolioView]:
        """The views kept of these portfolios that are current: kept at the count before this
        batch's. They leave the cache until the batch commits, since the batch changes them."""
        views = {}
        for portfolio, version in versions.items():
            kept = self._views.pop(portfolio, None)
            if kept is not None and kept[0] == version - 1:
                views[portfolio] = kept[1]
        return views


def projects_changed(
    topic: str, portfolio: str, events: Sequence[ProjectChanged], now: datetime
) -> list[OutboxMessage]:
    """``ProjectsChanged`` records of one portfolio's accepted submissions, in order, keyed by
    the portfolio; each value is the contract's serialisation (tested). The records' ids come
    from the first submission's: a submission is accepted once, so no two batches share one."""
    return batched_messages(
        topic=topic,
        key=portfolio,
        empty=ProjectsChanged(portfolio=portfolio, changes=[]),
        entries=[e.model_dump_json(exclude=_RECORD_FIELDS).encode() for e in events],
        max_entries=ProjectsChanged.MAX_PROJECTS,
        max_bytes=ProjectsChanged.MAX_BYTES,
        event_id=f"intake-projects:{portfolio}:{events[0].submission_id}",
        source="pmo/intake",
        time=now,
    )


# What a ProjectChanged has beside its entry's fields: the record's own.
_RECORD_FIELDS = set(ProjectChanged.model_fields) - set(ProjectChange.model_fields)


def _decode(record: Record) -> tuple[str, ProjectSubmission] | list[Reason]:
    parsed = parse_submission(record.value, record.key)
    if isinstance(parsed, list):
        return parsed
    return inbox_id(str(parsed.submission_id)), parsed


def _sent_key(record: Record) -> str | None:
    """The key an unreadable record was sent with, for finding it in the log."""
    return record.key[:300].decode("utf-8", "replace") if record.key is not None else None


def _stored(event: ProjectChanged) -> StoredProject:
    return StoredProject(
        revision=event.revision,
        withdrawn=event.withdrawn,
        state=event.project,
        portfolio=event.portfolio,
        external_id=event.project.external_id,
    )


def _entry(
    record: Record,
    outcome: str,
    reasons: Sequence[Reason],
    submission_id: str | None,
    key: str | None,
    revision: int | None,
) -> LogEntry:
    return LogEntry(
        submission_id=submission_id,
        project_key=key,
        revision=revision,
        outcome=outcome,
        code=reasons[0].code if reasons else None,
        reasons=reasons,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
