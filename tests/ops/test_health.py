"""Health endpoints of a running service, on the real broker and Postgres: both answer 200 while
everything runs; when a task beside the consumer has ended (here the outbox relay), liveness and
readiness answer 503 and name it, so the orchestrator restarts the process."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from services.intake.app import build
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings, KafkaSettings

pytestmark = pytest.mark.integration


async def test_a_dead_relay_fails_liveness_and_readiness(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    await migrate(database.url, [service_component("intake")])
    async with build(kafka=kafka, database=database) as runtime:
        # The ASGI transport runs no lifespan: the runtime is the one started above.
        transport = httpx.ASGITransport(app=runtime.http_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
            assert (live.status_code, live.json()) == (200, {"status": "ok"})
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"database": True, "broker": True, "tasks": True}

            relay = runtime._relay_task
            assert relay is not None
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
            assert live.status_code == 503
            assert live.json() == {"status": "broken", "dead_tasks": ["intake-outbox"]}
            assert ready.status_code == 503
            assert ready.json()["checks"]["tasks"] is False
