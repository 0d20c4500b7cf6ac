"""Intake's composition root: the submissions' consumer and the duplicate search, in one
process or, by ``PMO_INTAKE_ROLE``, in processes of their own (docs/intake.md, "Roles")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from services.intake.duplicates import DuplicateSearch
from services.intake.handlers import SERVICE, IntakeHandler
from services.intake.repository import IntakeUnitOfWork
from services.intake.settings import IntakeSettings
from shared.consumer import BatchHandler
from shared.consumer_record import Record
from shared.runtime import ServiceRuntime, assemble, run
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic


def consumed(role: str) -> tuple[Topic, ...]:
    """The topics a process of this role consumes: submissions, and intake's own project
    changes read back by the duplicate search."""
    if role == "submissions":
        return (Topic.SUBMISSIONS,)
    if role == "duplicates":
        return (Topic.PROJECTS,)
    return (Topic.SUBMISSIONS, Topic.PROJECTS)


def build(
    settings: IntakeSettings | None = None,
    kafka: KafkaSettings | None = None,
    database: DatabaseSettings | None = None,
) -> ServiceRuntime:
    settings = settings or IntakeSettings()
    topics = consumed(settings.role)

    def handler(runtime: ServiceRuntime) -> BatchHandler:
        def uow() -> IntakeUnitOfWork:
            return IntakeUnitOfWork(runtime.pool)

        def now() -> datetime:
            return datetime.now(UTC)

        # The role's use cases, by the topic each consumes.
        handlers: dict[str, BatchHandler] = {}
        if Topic.SUBMISSIONS in topics:
            handlers[runtime.topics(Topic.SUBMISSIONS)] = IntakeHandler(
                uow=uow, topics=runtime.topics, clock=now
            ).handle
        if Topic.PROJECTS in topics:
            handlers[runtime.topics(Topic.PROJECTS)] = DuplicateSearch(
                uow, runtime.topics, now
            ).handle

        async def handle(records: Sequence[Record]) -> None:
            # Each consumer takes one of the topics (the lanes below): a batch is all of one.
            if records:
                await handlers[records[0].topic](records)

        return handle

    return assemble(
        SERVICE,
        settings,
        kafka,
        database,
        topics=topics,
        handler=handler,
        separate=(Topic.PROJECTS,) if len(topics) > 1 else (),
        consumer_settings=lambda consumed: (
            settings.waiting(settings.derived_wait_ms) if Topic.PROJECTS in consumed else settings
        ),
    )


def main() -> None:
    settings = IntakeSettings()
    run(SERVICE, settings, lambda: build(settings))
