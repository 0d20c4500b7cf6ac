from __future__ import annotations

import json
import random

import pytest

from services.intake.app import build
from services.intake.settings import IntakeSettings
from shared.contracts.events import DuplicatesFound, ProjectDuplicates, ProjectsChanged
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from tests.helpers import eventually, key_of, publish_json, publish_raw, submission

pytestmark = pytest.mark.integration


async def test_submission_is_stored_and_bad_bytes_dead_lettered(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    await migrate(database.url, [service_component("intake")])
    runtime = build(IntakeSettings(), kafka, database)
    topic = runtime.topics(Topic.SUBMISSIONS)
    async with runtime:
        good = submission("PRJ-1")
        await publish_raw(kafka.bootstrap_servers, topic, [(b"x", b"\xff\xfe not utf8")])
        await publish_json(kafka.bootstrap_servers, topic, [good, good])

        async def stored() -> int:
            return int(await runtime.pool.fetchval("SELECT count(*) FROM intake.submission_log"))

        await eventually(lambda: _at_least(stored, 2), what="two log rows")
        rows = await runtime.pool.fetch(
            "SELECT outcome, code FROM intake.submission_log ORDER BY id"
        )
        assert sorted((r["outcome"], r["code"]) for r in rows) == [
            ("accepted", None),
            ("refused", "not_utf8"),
        ]


async def test_records_with_undecodable_headers_are_still_handled(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    """Upstream systems set headers we do not read; one that is not UTF-8 must not stop the
    batch (the framework decodes every header) nor lose the record."""
    await migrate(database.url, [service_component("intake")])
    runtime = build(IntakeSettings(), kafka, database)
    topic = runtime.topics(Topic.SUBMISSIONS)
    async with runtime:
        plain, odd = submission("PRJ-PLAIN"), submission("PRJ-ODD")
        await publish_json(kafka.bootstrap_servers, topic, [plain])
        await publish_raw(
            kafka.bootstrap_servers,
            topic,
            [(key_of(odd), json.dumps(odd).encode())],
            headers=[("upstream-trace", b"\xff\xfe\x00"), ("ce_id", b"\xc3\x28")],
        )

        async def stored() -> int:
            return int(await runtime.pool.fetchval("SELECT count(*) FROM intake.submission_log"))

        await eventually(lambda: _at_least(stored, 2), what="both submissions logged")
        rows = await runtime.pool.fetch("SELECT outcome, project_key FROM intake.submission_log")
    assert sorted((r["outcome"], r["project_key"]) for r in rows) == [
        ("accepted", "retail/jira/PRJ-ODD"),
        ("accepted", "retail/jira/PRJ-PLAIN"),
    ]


async def _at_least(probe, n):  # type: ignore[no-untyped-def]
    return (await probe()) >= n


async def test_shuffled_and_repeated_revisions_converge_on_the_in_order_state(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    await migrate(database.url, [service_component("intake")])
    stages = ["idea", "proposal", "approved", "active", "done"]
    projects = [f"PRJ-{n}" for n in range(5)]
    revisions = {
        p: [
            submission(p, revision=r + 1, stage=s, name=f"{p} v{r + 1}")
            for r, s in enumerate(stages)
        ]
        for p in projects
    }
    rnd = random.Random(42)
    stream = [m for p in projects for m in revisions[p]] * 2  # every message twice
    rnd.shuffle(stream)
    async with build(IntakeSettings(max_records=3), kafka, database) as runtime:
        await publish_json(kafka.bootstrap_servers, runtime.topics(Topic.SUBMISSIONS), stream)

        async def settled() -> bool:
            n = await runtime.pool.fetchval("SELECT count(*) FROM submission_log")
            return bool(n >= len(stream) // 2)  # the repeats are skipped, never logged

        await eventually(settled, what="every distinct submission handled")
        rows = await runtime.pool.fetch("SELECT project_key, revision, stage, name FROM projects")
    assert {(r["project_key"], r["revision"], r["stage"], r["name"]) for r in rows} == {
        (f"retail/jira/{p}", 5, "done", f"{p} v5") for p in projects
    }


async def test_a_near_duplicate_name_is_found_after_the_change_is_published(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    """One process of the default role: the submissions' consumer accepts B without a search,
    and the duplicate search reads B's change back from the broker and publishes its match."""
    await migrate(database.url, [service_component("intake")])
    async with build(IntakeSettings(), kafka, database) as runtime:
        topic = runtime.topics(Topic.SUBMISSIONS)
        found = _found(runtime)
        await publish_json(
            kafka.bootstrap_servers, topic, [submission("A", name="Customer data platform")]
        )
        await eventually(lambda: _has(found, "retail/jira/A"), what="A searched")
        await publish_json(
            kafka.bootstrap_servers,
            topic,
            [submission("B", source="sheet", name="Platform for customer data")],
        )
        await eventually(lambda: _has(found, "retail/sheet/B"), what="B searched")
        row = await runtime.pool.fetchrow(
            "SELECT outcome, reasons FROM submission_log WHERE project_key = 'retail/sheet/B'"
        )
        values = await runtime.pool.fetch(
            "SELECT value FROM outbox WHERE topic = $1", runtime.topics(Topic.PROJECTS)
        )
        searched = await found()
    assert (row["outcome"], json.loads(row["reasons"])) == ("accepted", [])
    assert all(
        e.possible_duplicates == []
        for v in values
        for e in ProjectsChanged.model_validate_json(v["value"]).changes
    )
    assert searched["retail/jira/A"].possible_duplicates == []
    (match,) = searched["retail/sheet/B"].possible_duplicates
    assert match.external_id == "A"
    assert match.similarity >= 0.85


def _found(runtime):  # type: ignore[no-untyped-def]
    """What the duplicate search has published (its outbox rows): project key -> entry."""

    async def found() -> dict[str, ProjectDuplicates]:
        rows = await runtime.pool.fetch(
            "SELECT value FROM outbox WHERE topic = $1", runtime.topics(Topic.DUPLICATES)
        )
        return {
            e.project_key: e
            for r in rows
            for e in DuplicatesFound.model_validate_json(r["value"]).projects
        }

    return found


async def _has(found, key: str) -> bool:  # type: ignore[no-untyped-def]
    return key in await found()


def _log_count(runtime):  # type: ignore[no-untyped-def]
    async def count() -> int:
        return int(await runtime.pool.fetchval("SELECT count(*) FROM intake.submission_log"))

    return count
