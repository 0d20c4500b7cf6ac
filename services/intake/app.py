"""Intake's composition root."""

from __future__ import annotations

from datetime import UTC, datetime

from services.intake.handlers import SERVICE, IntakeHandler
from services.intake.repository import IntakeUnitOfWork
from services.intake.settings import IntakeSettings
from shared.runtime import ServiceRuntime, assemble, run
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic


def build(
    settings: IntakeSettings | None = None,
    kafka: KafkaSettings | None = None,
    database: DatabaseSettings | None = None,
) -> ServiceRuntime:
    return assemble(
        SERVICE,
        settings or IntakeSettings(),
        kafka,
        database,
        topics=[Topic.SUBMISSIONS],
        handler=lambda runtime: (
            IntakeHandler(
                uow=lambda: IntakeUnitOfWork(runtime.pool),
                topics=runtime.topics,
                clock=lambda: datetime.now(UTC),
            ).handle
        ),
    )


def main() -> None:
    settings = IntakeSettings()
    run(SERVICE, settings, lambda: build(settings))
