"""Reporting's view of the events it reads: the read-model rows they become. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared import deadletter
from shared.consumer_record import Record


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    dead_letter_id: str
    consumer: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    record_key: str | None
    reasons: list[dict[str, str]]
    original_size: int | None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def dead_letter_row(record: Record) -> tuple[str, DeadLetterRow]:
    """A dead-letter record as a row. Never refuses: a dead letter must not be dead-lettered
    again, so whatever is unreadable about it is kept as a reason of its own."""
    row_id = record.header("ce_id") or f"dlq-record:{record.coordinates}"
    raw = record.header(deadletter.REASONS)
    try:
        reasons = json.loads(raw) if raw else []
    except ValueError:
        reasons = None
    if not isinstance(reasons, list):
        reasons = [{"path": "", "code": "unreadable_reasons", "message": (raw or "")[:500]}]
    # The inbox id is not the dead letter's own id: when reporting itself refused the record,
    # it claimed that id in the same transaction (so a redelivery is not refused twice), and
    # its own dead letter would then be skipped as a duplicate and never reach the read model.
    return f"dead-letter-row:{row_id}", DeadLetterRow(
        dead_letter_id=row_id,
        consumer=record.header(deadletter.CONSUMER),
        source_topic=record.header(deadletter.SOURCE_TOPIC),
        source_partition=_int(record.header(deadletter.SOURCE_PARTITION)),
        source_offset=_int(record.header(deadletter.SOURCE_OFFSET)),
        record_key=record.key.decode("utf-8", "replace") if record.key is not None else None,
        reasons=reasons,
        original_size=_int(record.header(deadletter.ORIGINAL_SIZE)),
    )
