"""CloudEvents 1.0 attributes carried as Kafka headers (binary content mode)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
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


def batched_messages(
    *,
    topic: str,
    key: str,
    empty: TypedEvent,
    entries: Sequence[bytes],
    max_entries: int,
    max_bytes: int,
    event_id: str,
    source: str,
    time: datetime,
) -> list[OutboxMessage]:
    """Records of an event whose last field is a list, carrying ``entries`` (each an entry's
    JSON) in order. ``empty`` is the event with that list empty: each value is its JSON up to
    the list's ``[``, entries joined by commas, then ``]}``, so it is the event's serialisation
    with those entries; at most ``max_entries`` entries and, unless one entry alone is larger,
    ``max_bytes`` of JSON a record. Each record's id is ``event_id`` and ``:<part>``; none for
    no entries."""
    whole = empty.model_dump_json().encode()
    if not whole.endswith(b"[]}"):
        raise ValueError(f"{type(empty).__name__}'s last field is not an empty list")
    head = whole[:-2]
    # A record of n entries is head, the entries, n - 1 commas and "]}": with a comma counted
    # after every entry, the entries may take max_bytes - len(head) - 1.
    budget = max_bytes - len(head) - 1
    # Greedy: each record takes entries while they fit. ends[i] is the size of entries[: i + 1]
    # with a comma each, so a record from ``start`` ends before the first entry whose end is
    # beyond the budget past ``start`` (binary search), and has at least one entry.
    ends = list(itertools.accumulate(len(entry) + 1 for entry in entries))
    parts: list[Sequence[bytes]] = []
    start = 0
    while start < len(entries):
        before = ends[start - 1] if start else 0
        limit = min(len(entries), start + max_entries)
        end = max(start + 1, bisect.bisect_right(ends, before + budget, start, limit))
        parts.append(entries[start:end])
        start = end
    common = headers(
        event_id="", event_type=type(empty).TYPE, source=source, time=time, subject=key
    )
    encoded = key.encode()
    return [
        OutboxMessage(
            topic=topic,
            key=encoded,
            value=head + b",".join(part) + b"]}",
            headers={**common, "ce_id": f"{event_id}:{n}"},
        )
        for n, part in enumerate(parts)
    ]
