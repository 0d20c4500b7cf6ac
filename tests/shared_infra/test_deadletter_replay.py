"""`pmo deadletters replay` gives an internal event back its CloudEvents headers: consumers
identify and type internal events by ``ce_id`` and ``ce_type``, which a dead letter's own
headers take the names of."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.intake.handlers import projects_changed
from shared import deadletter
from shared.cli.deadletters import REPLAYED_FROM
from shared.consumer_record import Record
from shared.contracts.events import ProjectChanged, ProjectsChanged, ProjectState
from shared.errors import Reason
from shared.events_io import decode_typed
from shared.outbox import OutboxMessage
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames
from tests.helpers import consumed, publish_raw
from tests.reliability.harness import read_topic
from tests.system import run_pmo

pytestmark = pytest.mark.integration

NOW = datetime(2027, 1, 4, 9, 30, tzinfo=UTC)


def _projects_changed(topic: str) -> OutboxMessage:
    """A record of intake's, as intake writes it."""
    change = ProjectChanged(
        project_key="retail/jira/P1",
        portfolio="retail",
        revision=3,
        submission_id="sub-1",
        occurred_at=NOW,
        project=ProjectState.model_validate(
            {"name": "P1", "portfolio": "retail", "source": "jira", "external_id": "P1"}
        ),
    )
    [message] = projects_changed(topic, "retail", [change], NOW)
    return message


async def test_a_replayed_internal_event_is_applied_as_the_event_it_was(
    kafka: KafkaSettings,
) -> None:
    names = TopicNames(kafka.topic_prefix)
    original = consumed(_projects_changed(names(Topic.PROJECTS)))
    letter = deadletter.dead_letter(
        original,
        [Reason("unknown_event_type", "an older reader")],
        consumer="reporting",
        topic=names(Topic.DEAD_LETTERS),
        now=NOW,
    )
    assert letter.headers["ce_id"] != original.header("ce_id"), "the dead letter's own id"
    await publish_raw(
        kafka.bootstrap_servers,
        letter.topic,
        [(letter.key, letter.value)],
        headers=list(consumed(letter).headers),
    )

    code, out = await run_pmo(kafka, "", "deadletters", "replay", "--code", "unknown_event_type")
    assert code == 0, out
    assert "1 record(s) replayed" in out

    [replayed] = await read_topic(
        kafka.bootstrap_servers, names(Topic.PROJECTS), lambda records: len(records) >= 1
    )
    record = Record.from_kafka(replayed)
    assert record.header(REPLAYED_FROM) is not None
    for name in ("ce_id", "ce_type", "ce_source", "ce_time", "content-type"):
        assert record.header(name) == original.header(name), name
    decoded = decode_typed(record, ProjectChanged, ProjectsChanged)
    assert isinstance(decoded, tuple), decoded
    event_id, event = decoded
    assert event_id == "intake-projects:retail:sub-1:0"
    assert isinstance(event, ProjectsChanged)
    assert [c.project_key for c in event.changes] == ["retail/jira/P1"]


def test_a_dead_letter_written_before_headers_were_kept_replays_without_them() -> None:
    original = consumed(_projects_changed("pmo.intake.projects.v1"))
    letter = consumed(
        deadletter.dead_letter(
            original, [Reason("x", "y")], consumer="scoring", topic="dlq", now=NOW
        )
    )
    assert deadletter.original_headers(letter) == [
        (k, v) for k, v in original.headers if k.startswith("ce_") or k == "content-type"
    ]
    older = replace(
        letter, headers=tuple((k, v) for k, v in letter.headers if k != deadletter.ORIGINAL_HEADERS)
    )
    assert deadletter.original_headers(older) == []
