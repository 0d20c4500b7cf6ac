"""Intake's composition root."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI

from services.intake.handlers import SERVICE, IntakeHandler
from services.intake.repository import IntakeUnitOfWork
from services.intake.settings import IntakeSettings
from shared import logs
from shared.consumer import BatchRunner, RetryPolicy, subscribe
from shared.runtime import ServiceRuntime, serve
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic


def build(
    settings: IntakeSettings | None = None,
    kafka: KafkaSettings | None = None,
    database: DatabaseSettings | None = None,
) -> ServiceRuntime:
    settings = settings or IntakeSettings()
    runtime = ServiceRuntime(SERVICE, settings, kafka or KafkaSettings(), database or DatabaseSettings())
    handler = IntakeHandler(
        uow=lambda: IntakeUnitOfWork(runtime.pool),
        topics=runtime.topics,
        clock=lambda: datetime.now(UTC),
    )
    runner = BatchRunner(
        SERVICE, handler.handle, runtime.dead_letter, RetryPolicy(budget_seconds=settings.retry_max_seconds)
    )
    subscribe(
        runtime.broker,
        [runtime.topics(Topic.SUBMISSIONS)],
        settings=settings,
        runner=runner,
        service=SERVICE,
    )
    return runtime


def create_app() -> FastAPI:
    return build().http_app()


def main() -> None:
    settings = IntakeSettings()
    logs.configure(settings.log_level, json=settings.log_json, service=SERVICE)
    serve(build(settings).http_app(), settings.http_host, settings.http_port)
