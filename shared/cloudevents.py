"""CloudEvents 1.0 attributes carried as Kafka headers (binary content mode)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from shared.outbox import OutboxMessage

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


def headers(
    *, event_id: str, event_type: str, source: str, time: datetime, subject: str
) -> dict[str, str]:
    """The ``ce_*`` headers of one event. ``event_id`` must be stable across redelivery."""
    return {
        "ce_specversion": SPEC_VERSION,
        "ce_id": event_id,
        "ce_type": event_type,
        "ce_source": source,
        "ce_time": time.isoformat(),
        "ce_subject": subject,
        "content-type": CONTENT_TYPE,
    }


def event_message(
    *,
    topic: str,
    key: str,
    event: BaseModel,
    event_type: str,
    event_id: str,
    source: str,
    time: datetime,
) -> OutboxMessage:
    """An internal event as an outbox record: JSON value, CloudEvents headers, keyed."""
    return OutboxMessage(
        topic=topic,
        key=key.encode(),
        value=event.model_dump_json().encode(),
        headers=headers(
            event_id=event_id, event_type=event_type, source=source, time=time, subject=key
        ),
    )
