"""Admission of a consumed batch: decode each record, record its id in the inbox, drop the
ones already applied, and turn the undecodable ones into dead letters. Every service's handler
starts here, inside its unit of work."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from shared import metrics
from shared.consumer_record import Record
from shared.contracts.events import RankChange, RankingChanged
from shared.deadletter import dead_letter, dead_letter_id
from shared.errors import Reason
from shared.outbox import OutboxMessage
from shared.uow import UnitOfWork

T = TypeVar("T")

Decoder = Callable[[Record], "tuple[str, T] | list[Reason]"]


@dataclass(slots=True)
class Admitted(Generic[T]):
    """The fresh, decoded records in order; the refused ones with their reasons; and the dead
    letters to emit in the same transaction."""

    items: list[tuple[Record, T]] = field(default_factory=list)
    refused: list[tuple[Record, list[Reason]]] = field(default_factory=list)
    dead_letters: list[OutboxMessage] = field(default_factory=list)
    duplicates: int = 0


def refuse(
    record: Record, reasons: list[Reason], *, consumer: str, topic: str, now: datetime
) -> OutboxMessage:
    """The dead letter for ``record``, counted by reason code."""
    for reason in reasons:
        metrics.DEAD_LETTERS.labels(consumer, reason.code).inc()
    return dead_letter(record, reasons, consumer=consumer, topic=topic, now=now)


@dataclass(slots=True)
class Decoded(Generic[T]):
    """A batch's records decoded, each with the inbox id it is claimed under (the decoded
    event's, or the undecodable record's dead-letter id): the first half of ``admit``, for a
    handler that claims the ids in a statement of its own."""

    records: list[tuple[Record, tuple[str, T] | list[Reason]]]
    ids: list[str]

    def claims(self) -> list[tuple[str, T | None]]:
        """Each record's inbox id, with its decoded event (None if it could not be decoded)."""
        return [
            (event_id, d[1] if isinstance(d, tuple) else None)
            for (_, d), event_id in zip(self.records, self.ids, strict=True)
        ]

    def admit(
        self, fresh: set[str], *, consumer: str, dead_letter_topic: str, now: datetime
    ) -> Admitted[T]:
        """The batch as admitted, given which of its ids the inbox had not seen (``fresh``)."""
        fresh = set(fresh)
        admitted: Admitted[T] = Admitted()
        for (record, d), event_id in zip(self.records, self.ids, strict=True):
            if event_id not in fresh:
                admitted.duplicates += 1
                continue
            fresh.discard(event_id)  # a second copy inside the same batch is a duplicate too
            if isinstance(d, tuple):
                admitted.items.append((record, d[1]))
            else:
                admitted.refused.append((record, d))
                admitted.dead_letters.append(
                    refuse(record, d, consumer=consumer, topic=dead_letter_topic, now=now)
                )
        if admitted.duplicates:
            metrics.DUPLICATES.labels(consumer).inc(admitted.duplicates)
        return admitted


def decode(records: Sequence[Record], decoder: Decoder[T], *, consumer: str) -> Decoded[T]:
    """Decode ``records``, each with the id its inbox record is to have."""
    decoded = [(record, decoder(record)) for record in records]
    ids = [
        d[0] if isinstance(d, tuple) else dead_letter_id(consumer, record) for record, d in decoded
    ]
    return Decoded(decoded, ids)


async def admit(
    uow: UnitOfWork,
    records: Sequence[Record],
    decoder: Decoder[T],
    *,
    consumer: str,
    dead_letter_topic: str,
    now: datetime,
) -> Admitted[T]:
    """Decode ``records``, claim their ids in the inbox, and sort them out: the fresh and
    decoded ones in order, the undecodable ones as dead letters, the rest duplicates."""
    decoded = decode(records, decoder, consumer=consumer)
    fresh = await uow.claim(decoded.ids)
    return decoded.admit(fresh, consumer=consumer, dead_letter_topic=dead_letter_topic, now=now)


def newest(
    items: Sequence[T],
    key: Callable[[T], str],
    version: Callable[[T], int],
    stored: Mapping[str, int],
) -> list[T]:
    """The newest version of each key, and only where it is newer than the stored version:
    redelivered and out-of-order events converge on the same state as an in-order replay."""
    latest: dict[str, T] = {}
    for item in items:
        k = key(item)
        floor = version(latest[k]) if k in latest else stored.get(k, -1)
        if version(item) > floor:
            latest[k] = item
    return list(latest.values())


def per_project(events: Sequence[object], many: type[Any], one: type[T]) -> list[T]:
    """Among a batch's ``events``, each entry of the ``many`` kind (``ProjectsChanged``,
    ``ScoresChanged``, ``PlansChanged``) as the ``one`` it stands for (its ``projects()``), and
    each ``one`` as earlier versions published them, a project a record."""
    out: list[T] = []
    for e in events:
        if isinstance(e, many):
            out.extend(e.projects())
        elif isinstance(e, one):
            out.append(e)
    return out


def rank_moves(events: Sequence[RankingChanged]) -> list[tuple[int, RankChange]]:
    """Each moved project's newest ``(ranking_version, move)`` among ``events``; whether it is
    newer than what is stored is left to the writing statement's version guard."""
    return newest(
        [(e.ranking_version, move) for e in events for move in e.ranks],
        lambda m: m[1].project_key,
        lambda m: m[0],
        {},
    )
