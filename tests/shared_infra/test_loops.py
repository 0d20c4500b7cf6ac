"""The background workers' loop: work waiting runs at once, idle waits, transient failures are
retried, and any other failure ends the worker."""

from __future__ import annotations

import pytest

from shared.loops import Isolation, keep_running


class _Stop(BaseException):
    """Ends a loop from its idle wait (not an Exception, so the loop cannot classify it)."""


async def test_runs_again_at_once_while_work_waits_and_idles_otherwise() -> None:
    calls: list[str] = []
    answers = iter([True, True, False, True, False])

    async def step() -> bool:
        calls.append("step")
        return next(answers)

    async def idle() -> None:
        calls.append("idle")
        if calls.count("idle") == 2:
            raise _Stop

    with pytest.raises(_Stop):
        await keep_running("test", step, idle)
    assert calls == ["step", "step", "step", "idle", "step", "step", "idle"]


async def test_a_transient_failure_is_retried_and_any_other_ends_the_loop() -> None:
    failures = iter([ConnectionResetError("lost"), ConnectionResetError("lost"), KeyError("bug")])
    steps = 0

    async def step() -> bool:
        nonlocal steps
        steps += 1
        raise next(failures)

    async def idle() -> None:
        raise AssertionError("a failed step does not idle")

    with pytest.raises(KeyError):
        await keep_running("test", step, idle)
    assert steps == 3


async def test_one_names_failure_is_isolated_counted_and_retried_later() -> None:
    failures: list[str] = []
    isolation = Isolation("planning", retry_after=3600, on_failure=lambda: failures.append("x"))
    calls: list[str] = []

    async def work(name: str) -> int:
        calls.append(name)
        if name == "broken":
            raise KeyError("a defect")
        return 1

    assert await isolation.run("broken", lambda: work("broken")) == 0
    assert await isolation.run("fine", lambda: work("fine")) == 1
    assert failures == ["x"]
    # Within the retry time the failed name is not tried again; the others are.
    assert await isolation.run("broken", lambda: work("broken")) == 0
    assert await isolation.run("fine", lambda: work("fine")) == 1
    assert calls == ["broken", "fine", "fine"]


async def test_a_transient_failure_of_one_name_propagates() -> None:
    isolation = Isolation("planning")

    async def lost() -> int:
        raise ConnectionResetError("lost")

    with pytest.raises(ConnectionResetError):
        await isolation.run("retail", lost)
    assert await isolation.run("retail", _one) == 1, "not held back: it did not fail for good"


async def _one() -> int:
    return 1
