"""The consumer's failure policy, with fake handlers (no infrastructure)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import pytest

from shared.consumer import BatchRunner, RetryExhausted, RetryPolicy
from shared.consumer_record import Record
from shared.errors import Reason, is_transient

FAST = RetryPolicy(initial_seconds=0.001, max_seconds=0.002, budget_seconds=0.5)


def records(n: int) -> list[Record]:
    return [Record("t", 0, i, None, str(i).encode(), (), 0) for i in range(n)]


class Recorder:
    def __init__(self, poison_at: set[int] | None = None, transient_failures: int = 0) -> None:
        self.poison_at = poison_at or set()
        self.transient_failures = transient_failures
        self.applied: list[int] = []
        self.dead: list[tuple[int, list[Reason]]] = []
        self.calls = 0

    async def handle(self, batch: Sequence[Record]) -> None:
        self.calls += 1
        if self.transient_failures:
            self.transient_failures -= 1
            raise ConnectionRefusedError("database restarting")
        if any(r.offset in self.poison_at for r in batch):
            raise ValueError("cannot handle this one")
        self.applied += [r.offset for r in batch]

    async def poison(self, record: Record, reasons: list[Reason]) -> None:
        self.dead.append((record.offset, reasons))


async def test_transient_failures_are_retried_until_they_pass() -> None:
    recorder = Recorder(transient_failures=3)
    await BatchRunner("t", recorder.handle, recorder.poison, FAST).process(records(5))
    assert recorder.applied == [0, 1, 2, 3, 4]
    assert recorder.dead == []
    assert recorder.calls == 4


async def test_retries_that_run_out_hand_the_batch_back() -> None:
    recorder = Recorder(transient_failures=10_000)
    with pytest.raises(RetryExhausted):
        await BatchRunner("t", recorder.handle, recorder.poison, FAST).process(records(3))
    assert recorder.applied == []
    assert recorder.dead == []


async def test_one_poison_record_is_isolated_and_dead_lettered_the_rest_applied() -> None:
    recorder = Recorder(poison_at={5})
    await BatchRunner("t", recorder.handle, recorder.poison, FAST).process(records(16))
    assert recorder.applied == [i for i in range(16) if i != 5]
    assert [offset for offset, _ in recorder.dead] == [5]
    reason = recorder.dead[0][1][0]
    assert reason.code == "processing_error"
    assert "ValueError" in reason.message


def test_classifier() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(asyncpg.exceptions.SerializationError("x"))
    assert is_transient(asyncpg.exceptions.CannotConnectNowError("x"))
    assert not is_transient(asyncpg.exceptions.UniqueViolationError("x"))
    assert not is_transient(ValueError())
    assert not is_transient(asyncpg.exceptions.InterfaceError("pool is closing"))
    # A pooled connection met after the pool took it back (it broke while the work awaited
    # something else), or a transaction left on a lost connection: the connection was lost.
    assert is_transient(
        asyncpg.exceptions.InterfaceError(
            "cannot call Connection.execute(): connection has been released back to the pool"
        )
    )
    assert is_transient(
        asyncpg.exceptions.InterfaceError(
            "cannot call Transaction.__aexit__(): the underlying connection is closed"
        )
    )
    lost = ConnectionResetError("reset by peer")
    caused = asyncpg.exceptions.InterfaceError("cannot perform operation")
    caused.__cause__ = lost
    assert is_transient(caused)
    suppressed = asyncpg.exceptions.InterfaceError("cannot perform operation")
    suppressed.__context__ = lost
    suppressed.__suppress_context__ = True  # raise ... from None: nothing says it was lost
    assert not is_transient(suppressed)
