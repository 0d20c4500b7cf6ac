"""Scoring's composition root."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.scoring.handlers import SERVICE, ScoringHandler
from services.scoring.repository import ScoringUnitOfWork
from services.scoring.settings import ScoringSettings
from shared.consumer import BatchHandler
from shared.runtime import ServiceRuntime, assemble, run
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic


def build(
    settings: ScoringSettings | None = None,
    kafka: KafkaSettings | None = None,
    database: DatabaseSettings | None = None,
) -> ServiceRuntime:
    settings = settings or ScoringSettings()
    settle_after = timedelta(milliseconds=settings.rank_settle_ms)
    settle_within = timedelta(milliseconds=settings.rank_settle_max_ms)

    def handler(runtime: ServiceRuntime) -> BatchHandler:
        scoring = ScoringHandler(
            uow=lambda: ScoringUnitOfWork(runtime.pool),
            topics=runtime.topics,
            clock=lambda: datetime.now(UTC),
            settle_after=settle_after,
            settle_within=settle_within,
        )
        # Also with no settle time: moves left pending before a restart are published.
        runtime.background("rank-settler", scoring.run_settler)
        return scoring.handle

    return assemble(
        SERVICE,
        settings,
        kafka,
        database,
        topics=[Topic.PROJECTS, Topic.SCORING_COMMANDS],
        handler=handler,
    )


def main() -> None:
    settings = ScoringSettings()
    run(SERVICE, settings, lambda: build(settings))
