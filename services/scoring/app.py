"""Scoring's composition root."""

from __future__ import annotations

from datetime import UTC, datetime

from services.scoring.handlers import SERVICE, ScoringHandler
from services.scoring.repository import ScoringUnitOfWork
from services.scoring.settings import ScoringSettings
from shared.runtime import ServiceRuntime, assemble, run
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic


def build(
    settings: ScoringSettings | None = None,
    kafka: KafkaSettings | None = None,
    database: DatabaseSettings | None = None,
) -> ServiceRuntime:
    return assemble(
        SERVICE,
        settings or ScoringSettings(),
        kafka,
        database,
        topics=[Topic.PROJECTS, Topic.SCORING_COMMANDS],
        handler=lambda runtime: (
            ScoringHandler(
                uow=lambda: ScoringUnitOfWork(runtime.pool),
                topics=runtime.topics,
                clock=lambda: datetime.now(UTC),
            ).handle
        ),
    )


def main() -> None:
    settings = ScoringSettings()
    run(SERVICE, settings, lambda: build(settings))
