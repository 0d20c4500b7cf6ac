"""The dashboard in a real headless Chromium (Debian's package), against the whole pipeline:
the page loads, the charts render, a new submission appears without a reload, and an instant
picked in the browser's own time zone shows the portfolio as it was then until Live."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from playwright.async_api import async_playwright

from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from tests.helpers import eventually, publish_json, publish_raw, submission
from tests.system import TOKEN, System, running

pytestmark = pytest.mark.e2e

ZONE = "America/Sao_Paulo"  # UTC-3 all year, no daylight saving since 2019

ARTIFACTS = Path(__file__).parents[2] / "artifacts"


def chromium() -> str:
    path = os.environ.get("PMO_CHROMIUM") or shutil.which("chromium")
    assert path, "Debian's chromium is needed (make test installs it): apt-get install chromium"
    return path


@pytest.fixture
async def system(database: DatabaseSettings, kafka: KafkaSettings) -> AsyncIterator[System]:
    async with running(database, kafka) as system:
        yield system


def team(role: str, fte: float) -> tuple[bytes, bytes]:
    body = {
        "update_id": str(uuid.uuid4()),
        "portfolio": "retail",
        "resource_id": f"team-{role}",
        "revision": 1,
        "name": role,
        "role": role,
        "fte": fte,
        "from": "2027-01",
    }
    return f"retail/team-{role}".encode(), json.dumps(body).encode()


@pytest.mark.timeout(240)
async def test_dashboard_renders_and_updates_live(
    system: System, database: DatabaseSettings
) -> None:
    bootstrap = system.kafka.bootstrap_servers
    await publish_raw(
        bootstrap, system.topics(Topic.RESOURCES), [team("backend", 2), team("qa", 1)]
    )
    demand = [{"role": "backend", "fte": 2, "start_month": 0, "months": 3}]
    overload = [{"role": "backend", "fte": 3, "start_month": 0, "months": 3}]
    await publish_json(
        bootstrap,
        system.topics(Topic.SUBMISSIONS),
        [
            submission(
                "RUN", name="Platform run", stage="active", risk=2, value=800_000, demand=overload
            ),
            submission("NEXT", name="Checkout rewrite", risk=4, value=3_000_000, demand=demand),
            submission(
                "LATER", name="Loyalty", risk=1, value=200_000, deadline="2027-04", demand=demand
            ),
        ],
    )

    async def planned() -> bool:
        items = await system.projects("retail")
        return len(items) == 3 and all(i["plan_status"] for i in items)

    await eventually(planned, what="the portfolio planned")

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            # Not UTC: the page sends a picked local time to the server in UTC.
            page = await browser.new_page(
                viewport={"width": 1400, "height": 1000}, timezone_id=ZONE
            )
            await page.goto(f"{system.api_url}/dashboard/retail?token={TOKEN}")
            await page.wait_for_selector("#ranking tbody tr", timeout=20_000)
            assert await page.locator("#ranking tbody tr").count() == 3
            # Committed work needs 3 backend FTE of 2 for three months: red cells, 150 %.
            over = page.locator('#heatmap td.cell[data-utilisation="1.5"]')
            await over.first.wait_for(timeout=20_000)
            assert await page.locator("#heatmap td.cell").count() >= 2 * 24
            assert await over.count() == 3
            assert await over.first.get_attribute("style") == "background:#dc2626"
            assert await page.locator("#scatter svg circle").count() == 3
            assert "Loyalty" in await page.locator("#deferred").inner_text()
            assert "delay RUN" in await page.locator("#conflicts").inner_text()

            # The picker's instants are whole seconds: LIVE is published after the next one.
            before_live = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
            await asyncio.sleep((before_live - datetime.now(UTC)).total_seconds() + 0.05)
            await publish_json(
                bootstrap,
                system.topics(Topic.SUBMISSIONS),
                [submission("LIVE", name="Live from upstream", risk=3, value=1_000_000)],
            )
            await page.wait_for_selector("#ranking >> text=Live from upstream", timeout=30_000)
            assert await page.locator("#ranking tbody tr").count() == 4

            # The portfolio as it was just before LIVE: three projects, their plan as then.
            local = before_live.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S")
            await page.fill("#as-of", local)
            await page.wait_for_function(
                "document.querySelectorAll('#ranking tbody tr').length === 3", timeout=20_000
            )
            assert "Live from upstream" not in await page.locator("#ranking").inner_text()
            # What has moved since then: LIVE, added.
            added = page.locator("#movement tr", has_text="Live from upstream")
            assert "added" in await added.inner_text()
            assert await page.locator("#scatter svg circle").count() == 3
            assert "as of" in await page.locator("#status").inner_text()
            # Before the portfolio began: nothing was there.
            await page.fill("#as-of", "2020-01-01T00:00:00")
            await page.wait_for_function(
                "document.querySelectorAll('#ranking tbody tr').length === 0", timeout=20_000
            )
            assert await page.locator("#movement tbody tr", has_text="added").count() == 4
            # Once a sweep has let that go, the header says from when the history is kept.
            conn = await asyncpg.connect(database.url)
            try:
                await conn.execute(
                    "INSERT INTO reporting.history_kept (kept_from) VALUES ($1)",
                    before_live - timedelta(days=1),
                )
            finally:
                await conn.close()
            await page.fill("#as-of", "2020-01-02T00:00:00")
            await page.wait_for_selector("#status >> text=has been swept", timeout=20_000)
            await page.click("#live")
            await page.wait_for_selector("#ranking >> text=Live from upstream", timeout=20_000)
            assert await page.locator("#ranking tbody tr").count() == 4
            assert await page.locator("#live").is_disabled()
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            await browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
