"""Reporting's composition root: the read-model consumers and the HTTP API, in one process or,
by ``PMO_REPORTING_ROLE``, in processes of their own (docs/reporting.md, "Roles")."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from services.reporting.api import create_api
from services.reporting.dashboard import dashboard_router
from services.reporting.handlers import (
    SERVICE,
    ReportingHandler,
    ScenarioRequests,
    WarehouseFeed,
)
from services.reporting.repository import ReadModelQueries, ReportingUnitOfWork
from services.reporting.retention import HistoryRetention
from services.reporting.settings import ReportingSettings
from shared.consumer import BatchHandler
from shared.runtime import ServiceRuntime, assemble, run
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic

TOPICS = (
    Topic.PROJECTS,
    Topic.DUPLICATES,
    Topic.SCORES,
    Topic.PLANS,
    Topic.PLAN_SUMMARIES,
    Topic.SCENARIOS,
    Topic.SCORING_AUDIT,
    Topic.DEAD_LETTERS,
)


def build(
    settings: ReportingSettings | None = None,
    kafka: KafkaSettings | None = None,
    database: DatabaseSettings | None = None,
) -> ServiceRuntime:
    settings = settings or ReportingSettings()
    if settings.role == "api":
        return ServiceRuntime(
            SERVICE,
            settings,
            kafka or KafkaSettings(),
            database or DatabaseSettings(),
            consumes=False,
        )
    interval = settings.warehouse_interval_ms / 1000
    rank_delay = timedelta(milliseconds=settings.warehouse_rank_delay_ms)
    change_delay = timedelta(milliseconds=settings.warehouse_change_delay_ms)
    derived_wait = timedelta(milliseconds=settings.warehouse_derived_wait_ms)

    def handler(runtime: ServiceRuntime) -> BatchHandler:
        def uow() -> ReportingUnitOfWork:
            return ReportingUnitOfWork(runtime.pool)

        def now() -> datetime:
            return datetime.now(UTC)

        if settings.role != "projects":  # the feed runs beside the scores and plans
            feed = WarehouseFeed(uow, runtime.topics, now, interval=interval)
            runtime.background("warehouse", feed.run)
            if settings.history_retention_days is not None:
                retention = HistoryRetention(
                    lambda: runtime.pool,
                    timedelta(days=settings.history_retention_days),
                    now,
                    interval=settings.history_sweep_interval_seconds,
                )
                runtime.background("history retention", retention.run)
        return ReportingHandler(
            uow=uow,
            topics=runtime.topics,
            clock=now,
            rank_delay=rank_delay,
            change_delay=change_delay,
            derived_wait=derived_wait,
        ).handle

    return assemble(
        SERVICE,
        settings,
        kafka,
        database,
        topics=consumed(settings.role),
        handler=handler,
        separate=(Topic.PROJECTS,) if settings.projects_lane and settings.role in WHOLE else (),
        consumer_settings=lambda topics: (
            settings if Topic.PROJECTS in topics else settings.waiting(settings.derived_wait_ms)
        ),
    )


# The roles that consume every topic, and those that serve the API.
WHOLE = ("all", "worker")
SERVING = ("all", "api")


def consumed(role: str) -> tuple[Topic, ...]:
    """The topics a process of this role consumes."""
    if role == "projects":
        return (Topic.PROJECTS,)
    if role == "others":
        return tuple(t for t in TOPICS if t != Topic.PROJECTS)
    return TOPICS if role in WHOLE else ()


def create_app(runtime: ServiceRuntime, settings: ReportingSettings) -> FastAPI:
    """The API plus health and metrics, with the runtime's lifecycle (a worker: health and
    metrics alone)."""
    if settings.role not in SERVING:
        return runtime.http_app()
    requests = ScenarioRequests(lambda: ReportingUnitOfWork(runtime.pool), runtime.topics)
    queries = lambda: ReadModelQueries(runtime.pool)  # noqa: E731
    api = create_api(settings, queries, requests.submit)
    api.include_router(dashboard_router(settings, queries))
    return runtime.http_app(api)


def main() -> None:
    if sys.argv[1:] == ["rebuild"]:
        from services.reporting.rebuild import main as rebuild

        rebuild()
        return
    settings = ReportingSettings()
    run(SERVICE, settings, lambda: build(settings), app=lambda rt: create_app(rt, settings))
