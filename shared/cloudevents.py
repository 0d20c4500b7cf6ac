"""CloudEvents 1.0 attributes carried as Kafka headers (binary content mode)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Protocol

from shared.outbox import OutboxMessage

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


class TypedEvent(Protocol):
    """An event contract: it knows its CloudEvents type and serialises itself."""

    TYPE: ClassVar[str]

    def model_dump_json(self) -> str: ...


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
    event: TypedEvent,
    event_id: str,
    source: str,
    time: datetime,
) -> OutboxMessage:
    """An internal event as an outbox record: JSON value, CloudEvents headers (the type is the
    event class's own ``TYPE``), keyed."""
    return OutboxMessage(
        topic=topic,
        key=key.encode(),
        value=event.model_dump_json().encode(),
        headers=headers(
            event_id=event_id,
            event_type=type(event).TYPE,
            source=source,
            time=time,
            subject=key,
        ),
    )
