"""A startup step that takes long says so: a replica that is not becoming ready names what it
waits for in its log (joining its consumer group, reaching the database or the broker)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared import runtime


async def test_a_slow_startup_step_is_reported_until_it_is_done(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "STARTUP_REPORT_SECONDS", 0.05)
    caplog.set_level(logging.WARNING, logger="shared.runtime")
    step = asyncio.Event()
    asyncio.get_running_loop().call_later(0.18, step.set)

    async def slow() -> str:
        await step.wait()
        return "joined"

    assert await runtime._reporting_delays("join consumer group g", slow()) == "joined"
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) >= 2, reports
    assert all(m.startswith("still waiting to join consumer group g after") for m in reports)


async def test_a_failing_startup_step_raises_its_error() -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("no database here")

    with pytest.raises(ConnectionRefusedError, match="no database here"):
        await runtime._reporting_delays("connect to the database", broken())
