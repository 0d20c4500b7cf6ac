"""Capacity's composition root."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.capacity.handlers import SERVICE, CapacityHandler
from services.capacity.repository import CapacityUnitOfWork, ProjectStates
from services.capacity.settings import CapacitySettings
from shared.consumer import BatchHandler
from shared.runtime import ServiceRuntime, assemble, run
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic


def build(
    settings: CapacitySettings | None = None,
    kafka: KafkaSettings | None = None,
    database: DatabaseSettings | None = None,
) -> ServiceRuntime:
    settings = settings or CapacitySettings()
    horizon_months, plan_start = settings.horizon_months, settings.plan_start

    def handler(runtime: ServiceRuntime) -> BatchHandler:
        states = ProjectStates()
        capacity = CapacityHandler(
            uow=lambda: CapacityUnitOfWork(runtime.pool, states),
            topics=runtime.topics,
            clock=lambda: datetime.now(UTC),
            horizon_months=horizon_months,
            plan_start=plan_start,
            replan_spacing=timedelta(milliseconds=settings.replan_spacing_ms),
        )
        runtime.background("replanner", capacity.run_replanner)
        return capacity.handle

    return assemble(
        SERVICE,
        settings,
        kafka,
        database,
        topics=[Topic.PROJECTS, Topic.SCORES, Topic.RESOURCES, Topic.CAPACITY_COMMANDS],
        handler=handler,
    )


def main() -> None:
    settings = CapacitySettings()
    run(SERVICE, settings, lambda: build(settings))
