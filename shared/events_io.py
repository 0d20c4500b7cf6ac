"""Decoding internal events from consumed records, with reasons instead of exceptions."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.consumer_record import Record
from shared.errors import Reason, validation_reasons

E = TypeVar("E", bound=BaseModel)

MAX_EVENT_BYTES = 1024 * 1024


def decode_event(record: Record, model: type[E]) -> tuple[str, E] | list[Reason]:
    """``(ce_id, event)`` from a record of an internal topic, or why it is not one."""
    event_id = record.header("ce_id")
    if not event_id:
        return [Reason("missing_event_id", "no ce_id header", "<headers>.ce_id")]
    if not record.value:
        return [Reason("empty", "the record has no value")]
    if len(record.value) > MAX_EVENT_BYTES:
        return [Reason("payload_too_large", f"{len(record.value)} bytes")]
    try:
        return event_id, model.model_validate_json(record.value)
    except ValidationError as exc:
        return validation_reasons(exc)


def decode_typed(
    record: Record, default: type[E], *others: type[E]
) -> tuple[str, E] | list[Reason]:
    """``(ce_id, event)`` from a record of a topic that carries several event types, the model
    chosen by the ``ce_type`` header among ``default`` and ``others`` (each with its ``TYPE``).
    A record without ``ce_type`` is read as ``default``, the type the topic carried first, as
    its producers wrote it before the topic carried more than one."""
    event_type = record.header("ce_type")
    models = (default, *others)
    for model in models:
        if event_type is None or event_type == getattr(model, "TYPE", None):
            return decode_event(record, model)
    known = ", ".join(str(getattr(m, "TYPE", m.__name__)) for m in models)
    return [
        Reason(
            "unknown_event_type",
            f"ce_type {event_type!r} is not one of {known}",
            "<headers>.ce_type",
        )
    ]


def decode_json(
    record: Record, contract: type[Any] | TypeAdapter[Any], *, max_bytes: int
) -> Any | list[Reason]:
    """A record's JSON value validated against ``contract`` (a model or a type adapter), or why
    it is not one. Never raises."""
    if not record.value:
        return [Reason("empty", "the record has no value")]
    if len(record.value) > max_bytes:
        return [Reason("payload_too_large", f"{len(record.value)} bytes; the limit is {max_bytes}")]
    try:
        if isinstance(contract, TypeAdapter):
            return contract.validate_json(record.value)
        return contract.model_validate_json(record.value)
    except ValidationError as exc:
        return validation_reasons(exc)
