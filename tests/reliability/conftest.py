"""The fault suite's fixtures. Its table is printed by ``tests/reliability/report.py``."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.reliability import harness
from tests.reliability.report import PROPERTY


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


@pytest.fixture(autouse=True)
def report_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Send the rows a test recorded with its report (its teardown's)."""
    before = len(harness.RESULTS)
    yield
    for figures in harness.RESULTS[before:]:
        request.node.user_properties.append((PROPERTY, json.dumps(figures.row())))
