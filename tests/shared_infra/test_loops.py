"""The background workers' loop: work waiting runs at once, idle waits, transient failures are
retried, and any other failure ends the worker."""

from __future__ import annotations

import pytest

from shared.loops import keep_running


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
