"""Reporting against the whole pipeline: BI views behind a read-only role, as-of history, the
compacted project topic, and a rebuild from the topics that equals the live read model."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from services.reporting.app import build as build_reporting
from services.reporting.settings import ReportingSettings
from shared.settings import DatabaseSettings, KafkaSettings, role_url
from shared.topics import Topic
from tests.helpers import eventually, publish_json, publish_raw, submission
from tests.system import running

pytestmark = pytest.mark.integration

VIEWS = (
    "v_portfolio",
    "v_ranking",
    "v_explanations",
    "v_capacity",
    "v_conflicts",
    "v_skill_gaps",
    "v_deferred",
    "v_funnel",
    "v_programs",
    "v_dead_letters",
    "v_scoring_audit",
    "v_projects_history",
    "v_rank_history",
    "v_capacity_history",
)


async def snapshot(url: str) -> dict[str, list[Any]]:
    conn = await asyncpg.connect(url)
    try:
        queries = {
            "projects": "SELECT * FROM reporting.projects ORDER BY project_key",
            "summaries": "SELECT portfolio, plan_version, utilisation, conflicts, skill_gaps"
            " FROM reporting.plan_summaries ORDER BY portfolio, plan_version",
            "dead_letters": "SELECT dead_letter_id, consumer, reasons FROM reporting.dead_letters"
            " ORDER BY dead_letter_id",
            "audit": "SELECT command_id, action, outcome, detail FROM reporting.scoring_audit"
            " ORDER BY command_id",
        }
        out = {}
        for name, sql in queries.items():
            rows = [dict(r) for r in await conn.fetch(sql)]
            for row in rows:
                row.pop("updated_at", None)
            out[name] = rows
        return out
    finally:
        await conn.close()


def resource() -> tuple[bytes, bytes]:
    body = {
        "update_id": str(uuid.uuid4()),
        "portfolio": "retail",
        "resource_id": "be",
        "revision": 1,
        "name": "Backend",
        "role": "backend",
        "fte": 2.0,
        "from": "2027-01",
    }
    return b"retail/be", json.dumps(body).encode()


@pytest.mark.timeout(240)
async def test_bi_views_history_compacted_topic_and_rebuild(
    database: DatabaseSettings, kafka: KafkaSettings, tmp_path: Path
) -> None:
    async with running(database, kafka) as system:
        await publish_raw(kafka.bootstrap_servers, system.topics(Topic.RESOURCES), [resource()])
        first = [
            submission(f"P{i}", name=f"Project {i}", program="Core", value=1e6 * (i + 1))
            for i in range(4)
        ]
        await publish_json(
            kafka.bootstrap_servers,
            system.topics(Topic.SUBMISSIONS),
            [*first, submission("BAD", stage="nope")],
        )
        model = tmp_path / "m.yaml"
        model.write_text("name: value-first\nmethod: weighted\nweights: {value: 1}\n")
        assert (await system.pmo("scoring", "set", "retail", str(model)))[0] == 0

        async def settled() -> bool:
            items = await system.projects("retail")
            dead = (await system.api.get("/api/v1/portfolios/retail/funnel")).json()
            audit = (await system.api.get("/api/v1/portfolios/retail/scoring/audit")).json()
            return (
                len(items) == 4
                and all(i["plan_status"] and i["model"] == "value-first" for i in items)
                and dead["rejected_submissions"] == 1
                and audit["total"] == 1
            )

        await eventually(settled, what="the first wave reported")
        before = datetime.now(UTC)
        await publish_json(
            kafka.bootstrap_servers,
            system.topics(Topic.SUBMISSIONS),
            [submission("P0", revision=2, name="Project zero, renamed", program="Core", value=1e6)],
        )

        async def renamed() -> bool:
            items = await system.projects("retail")
            return any(i["name"] == "Project zero, renamed" for i in items)

        await eventually(renamed, what="the rename reported")

        # History: the portfolio as it was.
        then = await system.api.get(
            "/api/v1/portfolios/retail/projects", params={"as_of": before.isoformat()}
        )
        assert "Project 0" in {i["name"] for i in then.json()["items"]}
        assert "Project zero, renamed" not in {i["name"] for i in then.json()["items"]}
        csv = await system.api.get("/api/v1/portfolios/retail/programs", params={"format": "csv"})
        assert csv.text.splitlines()[1].startswith("Core,4,")

        # The BI role reads the views, and nothing else.
        bi = await asyncpg.connect(role_url(database.url, "pmo_bi"))
        try:
            for view in VIEWS:
                await bi.fetch(f"SELECT * FROM reporting.{view} LIMIT 1")
            bi_rows = await bi.fetch(
                "SELECT external_id, name, rank, plan_status FROM reporting.v_portfolio"
                " ORDER BY rank NULLS LAST, project_key"
            )
            api_items = await system.projects("retail")
            assert [tuple(r) for r in bi_rows] == [
                (i["external_id"], i["name"], i["rank"], i["plan_status"]) for i in api_items
            ], "the BI views and the API show the same portfolio"
            assert await bi.fetchval("SELECT count(*) FROM reporting.v_capacity") == 24
            denied = 0
            for statement in (
                "SELECT * FROM reporting.projects",
                "SELECT * FROM reporting.inbox",
                "SELECT * FROM intake.projects",
                "SELECT * FROM scoring.models",
                "SELECT * FROM capacity.resources",
                "INSERT INTO reporting.v_dead_letters (dead_letter_id) VALUES ('x')",
                "DELETE FROM reporting.v_portfolio",
                "CREATE TABLE reporting.intruder (id int)",
                "CREATE TABLE public.intruder (id int)",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await bi.execute(statement)
                denied += 1
            assert denied == 9
        finally:
            await bi.close()

        # The compacted topic: the latest record of each project is the reported row.
        consumer = AIOKafkaConsumer(
            system.topics(Topic.PORTFOLIO_PROJECTS),
            bootstrap_servers=kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=f"warehouse-{uuid.uuid4().hex[:6]}",
        )
        await consumer.start()
        latest: dict[str, dict[str, Any]] = {}
        try:

            def shown(row: dict[str, Any]) -> tuple[Any, ...]:
                return (row["name"], row["rank"], row["plan_status"])

            async def complete() -> bool:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        latest[r.key.decode()] = json.loads(r.value)
                # Records are coalesced and follow the read model within the feed's interval.
                api_rows = {i["project_key"]: i for i in await system.projects("retail")}
                return latest.get("retail/jira/P0", {}).get("name") == "Project zero, renamed" and {
                    k: shown(v) for k, v in latest.items()
                } == {k: shown(v) for k, v in api_rows.items()}

            await eventually(complete, what="the warehouse records, as the read model")
        finally:
            await consumer.stop()
        live = await snapshot(database.url)

    # Rebuild from the topics with reporting stopped, then replay.
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pmo-reporting"),
        "rebuild",
        env={
            **os.environ,
            "PMO_DATABASE_URL": database.url,
            "PMO_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "PMO_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "PMO_API_TOKEN": "unused-token",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    assert (await snapshot(database.url))["projects"] == []
    settings = ReportingSettings(api_token="unused-token", max_records=50)
    async with build_reporting(settings, kafka, database):

        async def replayed() -> dict[str, list[Any]] | None:
            now = await snapshot(database.url)
            return now if now == live else None

        assert await eventually(replayed, within=60, what="the replay to equal the live model")
