"""Running services in the test's event loop, each on its real broker and database connections,
with the reporting API served over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from opentelemetry.sdk.trace import TracerProvider

from services.capacity.app import build as build_capacity
from services.capacity.settings import CapacitySettings
from services.intake.app import build as build_intake
from services.reporting.app import build as build_reporting
from services.reporting.app import create_app
from services.reporting.settings import ReportingSettings
from services.scoring.app import build as build_scoring
from shared.local import free_port
from shared.migrations import SERVICES, migrate, service_component
from shared.runtime import ServiceRuntime
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import TopicNames
from tests.helpers import eventually

TOKEN = "test-token"


@dataclass
class System:
    kafka: KafkaSettings
    topics: TopicNames
    api: httpx.AsyncClient
    api_url: str
    runtimes: dict[str, ServiceRuntime]

    async def projects(self, portfolio: str, **params: Any) -> list[dict[str, Any]]:
        response = await self.api.get(f"/api/v1/portfolios/{portfolio}/projects", params=params)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def scenario_done(self, portfolio: str, request_id: str) -> dict[str, Any] | None:
        """A scenario request's answer through the API, once it is done (else None)."""
        response = await self.api.get(f"/api/v1/portfolios/{portfolio}/scenarios/{request_id}")
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and body["status"] == "done" else None

    async def pmo(self, *args: str) -> tuple[int, str]:
        """Run the pmo command line against this system, as a user would."""
        return await run_pmo(self.kafka, self.api_url, *args)


async def run_pmo(kafka: KafkaSettings, api_url: str, *args: str) -> tuple[int, str]:
    """The pmo command line in a subprocess, pointed at this test's broker and API."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pmo"),
        *args,
        env={
            **os.environ,
            "PMO_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "PMO_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "PMO_API_URL": api_url,
            "PMO_API_TOKEN": TOKEN,
            "PMO_AUTHOR": "analyst@test",
            "COLUMNS": "200",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


@contextlib.asynccontextmanager
async def running(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    services: Sequence[str] = SERVICES,
    plan_start: str = "2027-01",
    tracer_providers: Mapping[str, TracerProvider] | None = None,
    *,
    split_reporting: bool = False,
) -> AsyncIterator[System]:
    """The services in this process, the reporting API served over HTTP. ``split_reporting``:
    reporting runs in the roles the production overlay deploys, each its own runtime:
    ``System.runtimes`` then has "reporting" (role ``others``), "reporting-projects" and
    "reporting-api"."""
    await migrate(database.url, [service_component(s) for s in SERVICES])
    builders = {
        "intake": lambda: build_intake(kafka=kafka, database=database),
        "scoring": lambda: build_scoring(kafka=kafka, database=database),
        "capacity": lambda: build_capacity(
            CapacitySettings(plan_start=plan_start), kafka, database
        ),
    }
    settings = ReportingSettings(
        api_token=TOKEN, max_records=100, role="api" if split_reporting else "all"
    )
    reporting = build_reporting(settings, kafka, database)
    providers = tracer_providers or {}
    reporting.tracing.use(providers.get("reporting"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(reporting, settings), host="127.0.0.1", port=port, log_config=None
        )
    )
    runtimes = {"reporting-api" if split_reporting else "reporting": reporting}
    if split_reporting:
        # A group of the test's own: on tansu, of two members stopping one after the other the
        # second may be mid-rebalance and not leave, and a later test's join into a group of
        # the same name would wait out its session.
        group = f"{kafka.topic_prefix}pmo-reporting"
        others = ReportingSettings(api_token=TOKEN, max_records=100, role="others", group_id=group)
        projects = ReportingSettings(
            api_token=TOKEN, max_records=100, role="projects", group_id=group
        )
        builders["reporting"] = lambda: build_reporting(others, kafka, database)
        builders["reporting-projects"] = lambda: build_reporting(projects, kafka, database)
        services = [*services, "reporting", "reporting-projects"]
    async with contextlib.AsyncExitStack() as stack:
        # The runtimes of different consumer groups start at once (each join waits out the
        # broker's initial rebalance delay, 5 s on tansu), the API's with the server; those of
        # one group in turn, as replicas do: tansu could leave members of one group joining at
        # once waiting for good.
        serving = asyncio.create_task(server.serve())

        async def stop_serving() -> None:
            server.should_exit = True
            if not server.started:  # failed before the API was up: not left starting
                serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

        stack.push_async_callback(stop_serving)
        by_group: dict[str, list[tuple[str, ServiceRuntime]]] = {}
        for name in services:
            if name in builders:
                runtime = builders[name]()
                runtime.tracing.use(providers.get(name))
                by_group.setdefault(runtime.settings.group_id, []).append((name, runtime))

        async def start_group(members: list[tuple[str, ServiceRuntime]]) -> None:
            for name, runtime in members:
                runtimes[name] = await stack.enter_async_context(runtime)

        starts = await asyncio.gather(
            *(start_group(members) for members in by_group.values()), return_exceptions=True
        )
        failed = [e for e in starts if isinstance(e, BaseException)]
        if failed:
            raise failed[0]

        async def started() -> bool:
            return bool(server.started)

        await eventually(started, what="API up")
        url = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})
        stack.push_async_callback(client.aclose)
        yield System(kafka, TopicNames(kafka.topic_prefix), client, url, runtimes)
