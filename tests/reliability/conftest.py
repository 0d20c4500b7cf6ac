"""The fault suite's fixtures and its table, printed at the end of the run and written to
``tests/artifacts/reliability.json``."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.reliability import harness

ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "reliability.json"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[harness.Broker]:
    """A broker of the test's own (a scenario may freeze it).

    Not the session's broker: by the time the fault suite runs, the rest of the suite has left
    thousands of topics and their records in that broker's memory, and a scenario measures the
    services' behaviour, not the broker's under that load."""
    the_broker = harness.Broker(tmp_path / "broker.log")
    the_broker.start()
    try:
        yield the_broker
    finally:
        the_broker.stop()


@pytest.fixture
async def rig(
    pg_server_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[harness.Rig]:
    """A fresh database on a broker of the test's own (see ``broker``), or on the external
    broker ``PMO_TEST_KAFKA_BOOTSTRAP`` names when it is set; services are started by the test
    (``await rig.pipeline()``) and killed at the end."""
    address = (
        os.environ.get("PMO_TEST_KAFKA_BOOTSTRAP") or request.getfixturevalue("broker").address
    )
    async with harness.rig(pg_server_url, address, tmp_path / "logs") as the_rig:
        yield the_rig


@pytest.fixture
async def broker_rig(
    pg_server_url: str, broker: harness.Broker, tmp_path: Path
) -> AsyncIterator[tuple[harness.Rig, harness.Broker]]:
    """A fresh database on a broker of the test's own that the test may freeze."""
    async with harness.rig(pg_server_url, broker.address, tmp_path / "logs") as the_rig:
        yield the_rig, broker


def table(rows: list[harness.Figures]) -> list[str]:
    head = ("scenario", "events", "lost", "duplicated", "dead-lettered", "recovery s")
    body = [
        (
            f.scenario,
            f"{f.events:,}",
            str(f.lost),
            str(f.duplicated),
            str(f.dead_lettered),
            "—" if f.recovery_seconds is None else f"{f.recovery_seconds:.1f}",
        )
        for f in rows
    ]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.RESULTS:
        return
    sizes = harness.SIZES
    mode = "full (PMO_RELIABILITY_FULL=1)" if harness.FULL else "default (make test)"
    terminalreporter.section(f"reliability: {mode}")
    for text in table(harness.RESULTS):
        terminalreporter.write_line(text)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(
        json.dumps(
            {
                "full": harness.FULL,
                "sizes": asdict(sizes),
                "rows": [f.row() for f in harness.RESULTS],
            },
            indent=2,
        )
        + "\n"
    )
    terminalreporter.write_line(f"written to {ARTIFACT}")
