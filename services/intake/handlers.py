"""Intake's use case: validate a batch of submissions and apply it in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from services.intake.domain import (
    Accepted,
    Ignored,
    Refused,
    StoredProject,
    decide,
    parse_submission,
)
from services.intake.repository import IntakeUnitOfWork, LogEntry
from shared import metrics
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.common import project_key
from shared.contracts.events import ProjectChanged
from shared.deadletter import dead_letter, dead_letter_id
from shared.errors import Reason
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "intake"


def event_id(submission_id: str) -> str:
    return f"intake:{submission_id}"


class IntakeHandler:
    """Applies submissions: accepted ones update the project and publish ``ProjectChanged``;
    stale ones are logged; invalid ones are logged and dead-lettered with reasons."""

    def __init__(
        self,
        uow: Callable[[], IntakeUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
    ) -> None:
        self._uow = uow
        self._topics = topics
        self._clock = clock

    async def handle(self, records: Sequence[Record]) -> None:
        parsed = [(record, parse_submission(record.value, record.key)) for record in records]
        ids = [
            event_id(str(p.submission_id))
            if not isinstance(p, list)
            else dead_letter_id(SERVICE, record)
            for record, p in parsed
        ]
        now = self._clock()
        async with self._uow() as uow:
            fresh = await uow.claim(ids)
            keys = {
                project_key(p.portfolio, p.source, p.external_id)
                for (_, p), id_ in zip(parsed, ids, strict=True)
                if not isinstance(p, list) and id_ in fresh
            }
            stored = await uow.projects.load(keys)
            changed: dict[str, StoredProject] = {}
            log: list[LogEntry] = []
            out: list[OutboxMessage] = []
            for (record, p), id_ in zip(parsed, ids, strict=True):
                if id_ not in fresh:
                    metrics.DUPLICATES.labels(SERVICE).inc()
                    continue
                fresh.discard(id_)  # a second copy in this same batch is a duplicate too
                if isinstance(p, list):
                    out.append(self._refuse(record, p, now))
                    log.append(_entry(record, "refused", p, None, None, None))
                    continue
                key = project_key(p.portfolio, p.source, p.external_id)
                sid = str(p.submission_id)
                decision = decide(p, stored.get(key))
                if isinstance(decision, Accepted):
                    stored[key] = changed[key] = _stored(decision.event)
                    out.append(self._publish(decision.event, now))
                    log.append(_entry(record, "accepted", [], sid, key, p.revision))
                elif isinstance(decision, Ignored):
                    reason = Reason(decision.code, decision.message)
                    log.append(_entry(record, "ignored", [reason], sid, key, p.revision))
                elif isinstance(decision, Refused):
                    out.append(self._refuse(record, decision.reasons, now))
                    log.append(_entry(record, "refused", decision.reasons, sid, key, p.revision))
            await uow.projects.save(changed.items())
            await uow.projects.log(log)
            await uow.emit(out)

    def _publish(self, event: ProjectChanged, now: datetime) -> OutboxMessage:
        return event_message(
            topic=self._topics(Topic.PROJECTS),
            key=event.project_key,
            event=event,
            event_type=ProjectChanged.TYPE,
            event_id=event_id(event.submission_id),
            source="pmo/intake",
            time=now,
        )

    def _refuse(self, record: Record, reasons: list[Reason], now: datetime) -> OutboxMessage:
        for reason in reasons:
            metrics.DEAD_LETTERS.labels(SERVICE, reason.code).inc()
        return dead_letter(
            record, reasons, consumer=SERVICE, topic=self._topics(Topic.DEAD_LETTERS), now=now
        )


def _stored(event: ProjectChanged) -> StoredProject:
    return StoredProject(revision=event.revision, withdrawn=event.withdrawn, state=event.project)


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
