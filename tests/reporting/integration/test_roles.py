"""Reporting split in processes' roles (``PMO_REPORTING_ROLE``), on a real broker and
Postgres: a worker for project changes and one for everything else consume and publish; an API
process consumes nothing and serves what they wrote, and the scenario requests it takes are
published by a worker's relay."""

from __future__ import annotations

from typing import Any, Literal

import httpx
import pytest

from services.reporting.app import TOPICS as REPORTED
from services.reporting.app import build, create_app
from services.reporting.settings import ReportingSettings
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from tests.helpers import eventually, publish_json, submission
from tests.system import TOKEN, running

pytestmark = pytest.mark.integration


async def test_the_api_process_serves_what_the_worker_consumed(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    async with running(
        database, kafka, services=("intake", "scoring", "capacity"), split_reporting=True
    ) as system:
        api = system.runtimes["reporting-api"]
        assert not api.consumes
        assert list(api.broker.subscribers) == []
        assert await api.ready() == {"database": True}
        topics = {
            name: sorted(t.name for s in system.runtimes[name].broker.subscribers for t in s.topics)
            for name in ("reporting", "reporting-projects")
        }
        projects = system.topics(Topic.PROJECTS)
        assert topics["reporting-projects"] == [projects]
        assert sorted([*topics["reporting"], projects]) == sorted(
            system.topics(t) for t in REPORTED
        )

        await publish_json(
            kafka.bootstrap_servers,
            system.topics(Topic.SUBMISSIONS),
            [submission("ROLE-1", name="Served by the API process")],
        )

        async def shown() -> dict[str, Any] | None:
            response = await system.api.get("/api/v1/portfolios/retail/projects/jira/ROLE-1")
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            return body if body.get("rank") is not None else None

        project = await eventually(shown, what="the project, scored, through the API process")
        assert project["name"] == "Served by the API process"

        # The API process writes the request to the outbox and has no relay: the worker's,
        # woken by the outbox's notification, publishes it; capacity answers; the worker
        # applies the answer; the API process shows it.
        asked = await system.api.post(
            "/api/v1/portfolios/retail/scenarios", json={"optimise": True}
        )
        assert asked.status_code == 202, asked.text
        request_id = asked.json()["request_id"]

        done = await eventually(
            lambda: system.scenario_done("retail", request_id),
            what="the scenario answered through the API process",
        )
        assert done["request_id"] == request_id


async def test_a_worker_serves_health_and_metrics_and_no_api(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    roles: tuple[Literal["worker", "projects", "others"], ...] = ("worker", "projects", "others")
    for role in roles:
        settings = ReportingSettings(api_token=TOKEN, role=role)
        app = create_app(build(settings, kafka, database), settings)
        transport = httpx.ASGITransport(app=app)  # no lifespan: the runtime is not started
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            assert (await client.get("/api/v1/portfolios", headers=headers)).status_code == 404
            assert (await client.get("/dashboard/retail")).status_code == 404
            assert (await client.get("/metrics")).status_code == 200


def test_the_role_is_one_the_service_knows() -> None:
    with pytest.raises(ValueError, match="role"):
        ReportingSettings(api_token=TOKEN, role="both")
