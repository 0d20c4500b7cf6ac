"""The exception tree and the transient/permanent classifier every consumer uses.

* transient: the world is briefly unavailable (database restarting, broker unreachable,
  serialisation conflict). Retried with backoff, never dead-lettered.
* permanent: the message itself is wrong. Dead-lettered with reasons, never retried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from aiokafka import errors as kafka_errors
from pydantic import ValidationError


@dataclass(frozen=True, slots=True)
class Reason:
    """A machine-readable reason for refusing a message."""

    code: str
    message: str
    path: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


class PmoError(Exception):
    """Root of pmo's own exceptions."""


class PermanentError(PmoError):
    """The message cannot be processed as it is; retrying will not help."""

    def __init__(self, reasons: list[Reason]) -> None:
        super().__init__("; ".join(f"{r.path or '<message>'}: {r.message}" for r in reasons))
        self.reasons = reasons


class TransientError(PmoError):
    """A dependency is unavailable for now; the same work will succeed later."""


_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
        "53400",  # configuration_limit_exceeded
        "08000",
        "08003",
        "08006",
        "08001",
        "08004",
    }
)

_LOST_CONNECTION = ("connection has been released back to the pool", "connection is closed")

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later can succeed."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # asyncpg raises a plain InterfaceError when a pooled connection or its transaction is
        # used after the connection was lost: the pool takes a broken connection back at once,
        # so work that was awaiting something else (a Kafka publish) meets it released. Our
        # code never uses a connection it released, so these mean a lost connection.
        if any(sign in str(exc) for sign in _LOST_CONNECTION):
            return True
        context = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        return context is not None and context is not exc and is_transient(context)
    if isinstance(exc, asyncpg.PostgresError):
        return getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False))
    return False


def validation_reasons(exc: ValidationError) -> list[Reason]:
    """Pydantic's errors as reasons: dotted field path, error type as the code, message."""
    return [
        Reason(
            code=str(error["type"]),
            message=str(error["msg"])[:500],
            path=".".join(str(part) for part in error["loc"]),
        )
        for error in exc.errors(include_url=False, include_input=False)
    ]
