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

    reported_twice = asyncio.Event()

    class Counter(logging.Handler):
        seen = 0

        def emit(self, record: logging.LogRecord) -> None:
            self.seen += 1
            if self.seen == 2:
                reported_twice.set()

    async def slow() -> str:  # done once it has been reported twice, however slow the machine
        await reported_twice.wait()
        return "joined"

    counter = Counter()
    logging.getLogger("shared.runtime").addHandler(counter)
    try:
        assert await runtime._reporting_delays("join consumer group g", slow()) == "joined"
    finally:
        logging.getLogger("shared.runtime").removeHandler(counter)
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) >= 2, reports
    assert all(m.startswith("still waiting to join consumer group g after") for m in reports)


async def test_a_cancelled_start_cancels_its_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "STARTUP_REPORT_SECONDS", 0.05)
    step_started, step_cancelled = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        step_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            step_cancelled.set()
            raise

    start = asyncio.ensure_future(runtime._reporting_delays("join consumer group g", forever()))
    await step_started.wait()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert step_cancelled.is_set()


async def test_a_failing_startup_step_raises_its_error() -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("no database here")

    with pytest.raises(ConnectionRefusedError, match="no database here"):
        await runtime._reporting_delays("connect to the database", broken())
