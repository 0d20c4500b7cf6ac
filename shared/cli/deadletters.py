"""Reading and replaying the dead-letter topic from the command line."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared import deadletter
from shared.broker import client_options
from shared.cli.publishing import partitions_of
from shared.consumer_record import Record
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames

REPLAYED_FROM = "pmo_replayed_from"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record

    @property
    def position(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def consumer(self) -> str:
        return self.record.header(deadletter.CONSUMER) or "?"

    @property
    def source(self) -> str:
        topic = self.record.header(deadletter.SOURCE_TOPIC) or "?"
        partition = self.record.header(deadletter.SOURCE_PARTITION) or "?"
        offset = self.record.header(deadletter.SOURCE_OFFSET) or "?"
        return f"{topic}/{partition}/{offset}"

    @property
    def reasons(self) -> list[dict[str, Any]]:
        try:
            value = json.loads(self.record.header(deadletter.REASONS) or "[]")
        except ValueError:
            return []
        return value if isinstance(value, list) else []

    def matches(self, consumer: str | None, code: str | None) -> bool:
        if consumer and self.consumer != consumer:
            return False
        return not code or any(r.get("code") == code for r in self.reasons)


def describe(letter: DeadLetter) -> str:
    """A dead letter as text for a person: where it came from, why it was refused (one reason a
    line, with its field path and code), every header, and the original key and value (JSON
    indented when it parses, bytes escaped when it is not text)."""
    record = letter.record
    lines = [
        f"dead letter {letter.position}",
        f"  refused by  {letter.consumer}",
        f"  came from   {letter.source}",
        "reasons:",
    ]
    lines += [
        f"  {r.get('path') or '<message>'}: {r.get('code')} - {r.get('message')}"
        for r in letter.reasons
    ] or ["  (none recorded)"]
    lines.append("headers:")
    lines += [
        f"  {name} = {bytes(value).decode('utf-8', 'backslashreplace')}"
        for name, value in record.headers
    ]
    lines.append(f"key: {(record.key or b'').decode('utf-8', 'backslashreplace')}")
    value = record.value or b""
    try:
        shown = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    except ValueError:
        shown = value.decode("utf-8", "backslashreplace")
    lines += [f"value ({len(value)} bytes):", shown]
    return "\n".join(lines)


async def read_all(kafka: KafkaSettings, *, idle_seconds: float = 2.0) -> list[DeadLetter]:
    """Every dead letter, from the beginning of the topic. The end is where nothing new has
    arrived for ``idle_seconds`` (a broker's high watermark is not trusted for this)."""
    topic = TopicNames(kafka.topic_prefix)(Topic.DEAD_LETTERS)
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        partitions = await partitions_of(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_seconds:
            batch = await consumer.getmany(timeout_ms=250)
            for records in batch.values():
                letters += [DeadLetter(Record.from_kafka(r)) for r in records]
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return sorted(
        letters, key=lambda d: (d.record.timestamp_ms, d.record.partition, d.record.offset)
    )


def replay_records(
    letters: list[DeadLetter],
) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Each dead letter's original key, value and CloudEvents headers, addressed to the topic it
    came from."""
    out = []
    for letter in letters:
        source = letter.record.header(deadletter.SOURCE_TOPIC)
        if not source or letter.record.header(deadletter.TRUNCATED) == "true":
            continue  # nowhere to send it, or not the original bytes any more
        headers = [
            (REPLAYED_FROM, f"{letter.record.topic}/{letter.position}".encode()),
            *deadletter.original_headers(letter.record),
        ]
        out.append((source, letter.record.key, letter.record.value or b"", headers))
    return out
