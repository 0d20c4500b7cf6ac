from __future__ import annotations

import pytest

from services.intake.app import build
from services.intake.settings import IntakeSettings
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from tests.helpers import eventually, publish_json, publish_raw, submission

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


async def _at_least(probe, n):  # type: ignore[no-untyped-def]
    return (await probe()) >= n
