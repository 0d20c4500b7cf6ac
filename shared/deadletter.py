"""Dead letters: the original record, unchanged, plus machine-readable reasons.

Following Kafka Connect's convention the dead-letter record's key and value are the original
bytes, so replaying one is publishing it again; the reasons and the record's origin travel in
``pmo_dlq_*`` headers next to the CloudEvents ones. The dead letter's own CloudEvents headers
take the original's names, so the original's (its event id and type, which internal consumers
need to apply it) travel as one JSON header, and ``pmo deadletters replay`` restores them.
Dead letters go through the outbox, in the same transaction as the inbox record of the refused
message, so each refusal is published once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from shared import cloudevents
from shared.consumer_record import Record
from shared.errors import Reason
from shared.outbox import OutboxMessage

EVENT_TYPE = "pmo.deadletter.v1"
# Kafka's default max.message.bytes is about 1 MB; keep room for headers.
MAX_ORIGINAL_BYTES = 900_000

REASONS = "pmo_dlq_reasons"
SOURCE_TOPIC = "pmo_dlq_source_topic"
SOURCE_PARTITION = "pmo_dlq_source_partition"
SOURCE_OFFSET = "pmo_dlq_source_offset"
CONSUMER = "pmo_dlq_consumer"
ORIGINAL_SIZE = "pmo_dlq_original_size"
ORIGINAL_SHA256 = "pmo_dlq_original_sha256"
TRUNCATED = "pmo_dlq_truncated"
ORIGINAL_HEADERS = "pmo_dlq_original_headers"


def _event_headers(record: Record) -> dict[str, str]:
    """The original record's CloudEvents headers (binary mode: ``ce_*`` and ``content-type``)
    that are text; a header that is not UTF-8 is not one of them."""
    kept = {}
    for name, value in record.headers:
        if name.startswith("ce_") or name == "content-type":
            try:
                kept[name] = value.decode()
            except UnicodeDecodeError:
                continue
    return kept


def original_headers(letter: Record) -> list[tuple[str, bytes]]:
    """The headers of the record a dead letter holds, as ``dead_letter`` kept them; none for a
    dead letter written before they were kept."""
    text = letter.header(ORIGINAL_HEADERS)
    if not text:
        return []
    return [(name, value.encode()) for name, value in json.loads(text).items()]


def dead_letter_id(consumer: str, record: Record) -> str:
    """Stable across redelivery of the same record to the same consumer."""
    return f"dlq:{consumer}:{record.topic}:{record.partition}:{record.offset}"


def dead_letter(
    record: Record, reasons: list[Reason], *, consumer: str, topic: str, now: datetime
) -> OutboxMessage:
    """The dead-letter record for ``record``, refused by ``consumer`` for ``reasons``."""
    original = record.value or b""
    truncated = len(original) > MAX_ORIGINAL_BYTES
    headers = cloudevents.headers(
        event_id=dead_letter_id(consumer, record),
        event_type=EVENT_TYPE,
        source=f"pmo/{consumer}",
        time=now,
        subject=f"{record.topic}/{record.partition}/{record.offset}",
    )
    headers.update(
        {
            REASONS: json.dumps([r.as_dict() for r in reasons], ensure_ascii=True),
            SOURCE_TOPIC: record.topic,
            SOURCE_PARTITION: str(record.partition),
            SOURCE_OFFSET: str(record.offset),
            CONSUMER: consumer,
            ORIGINAL_SIZE: str(len(original)),
            ORIGINAL_SHA256: hashlib.sha256(original).hexdigest(),
            TRUNCATED: "true" if truncated else "false",
            ORIGINAL_HEADERS: json.dumps(_event_headers(record), ensure_ascii=True),
            # The original bytes are not necessarily JSON.
            "content-type": "application/octet-stream",
        }
    )
    key = record.key[:1024] if record.key is not None else None
    return OutboxMessage(topic=topic, key=key, value=original[:MAX_ORIGINAL_BYTES], headers=headers)
