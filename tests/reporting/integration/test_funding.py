"""The funding line through the API on real Postgres: the ranking read in rank order against a
budget by both rules, only ranked projects, paging and CSV, as of an earlier instant, a page
that follows the ranking's changes, and the refusals (currencies, bad parameters)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from services.reporting.repository import ReadModelWriter
from shared.contracts.events import ProjectChanged
from tests.helpers import project_changed, project_scored
from tests.reporting.integration.conftest import api_client

pytestmark = pytest.mark.integration

PORTFOLIO = "funded"
TOKEN = "funding-token-1234"
PATH = f"/api/v1/portfolios/{PORTFOLIO}/funding"


def priced(
    external_id: str, cost: float | None, *, currency: str | None = "EUR", mandatory: bool = False
) -> ProjectChanged:
    change = project_changed(PORTFOLIO, external_id)
    project = change.project.model_copy(
        update={
            "cost": cost,
            "value": 3 * cost if cost is not None else None,
            "currency": currency,
            "mandatory": mandatory,
        }
    )
    return change.model_copy(update={"project": project})


async def rank(conn: asyncpg.Connection[Any], projects: list[ProjectChanged], version: int) -> None:
    """``projects`` written and ranked 1, 2, ... in this order."""
    async with conn.transaction():
        writer = ReadModelWriter(conn)
        await writer.apply_projects(projects)
        await writer.apply_scores(
            [
                project_scored(
                    PORTFOLIO,
                    p.project.external_id,
                    ranking_version=version,
                    rank=r,
                    score=100.0 - r,
                )
                for r, p in enumerate(projects, 1)
            ]
        )


@pytest.fixture
async def client(reporting_pool: asyncpg.Pool[Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(reporting_pool, TOKEN) as c:
        yield c


async def test_a_budget_read_down_the_ranking(
    reporting_pool: asyncpg.Pool[Any], client: httpx.AsyncClient
) -> None:
    """Ranked: M1 (mandatory, 50), P2 (40), P3 (30), P4 (no cost), P5 (5); U6 is not ranked.
    With 100: the line funds M1 and P2 and stops at P3; fill funds P5 as well."""
    async with reporting_pool.acquire() as conn:
        await rank(
            conn,
            [
                priced("M1", 50, mandatory=True),
                priced("P2", 40, currency=None),
                priced("P3", 30),
                priced("P4", None),
                priced("P5", 5),
            ],
            1,
        )
        async with conn.transaction():
            await ReadModelWriter(conn).apply_projects([priced("U6", 1)])

    line = (await client.get(PATH, params={"budget": 100})).json()
    assert [(i["external_id"], i["funded"], i["reason"]) for i in line["items"]] == [
        ("M1", True, None),
        ("P2", True, None),
        ("P3", False, "over_budget"),
        ("P4", False, "cost_unknown"),
        ("P5", False, "below_line"),
    ]
    assert [i["cumulative_cost"] for i in line["items"]] == [50, 90, 90, 90, 90]
    assert line["funded"] == {"projects": 2, "cost": 90, "value": 270}
    assert line["unfunded"] == {"projects": 3, "cost": 35, "value": 105}
    assert (line["remaining"], line["last_funded_rank"], line["first_unfunded_rank"]) == (10, 2, 3)
    assert (line["cost_unknown"], line["mandatory_unfunded"], line["total"]) == (1, 0, 5)
    assert (line["currency"], line["rule"], line["budget"]) == ("EUR", "line", 100)

    fill = (await client.get(PATH, params={"budget": 100, "rule": "fill"})).json()
    assert [i["funded"] for i in fill["items"]] == [True, True, False, False, True]
    assert (fill["remaining"], fill["last_funded_rank"]) == (5, 5)

    # 45 does not reach the mandatory M1: the line is drawn above it.
    short = (await client.get(PATH, params={"budget": 45})).json()
    assert [i["reason"] for i in short["items"]] == [
        "over_budget",
        "below_line",
        "below_line",
        "cost_unknown",
        "below_line",
    ]
    assert (short["mandatory_unfunded"], short["last_funded_rank"]) == (1, None)

    page = (await client.get(PATH, params={"budget": 100, "limit": 2, "offset": 2})).json()
    assert [i["external_id"] for i in page["items"]] == ["P3", "P4"]
    assert page["funded"]["projects"] == 2  # the totals are the whole ranking's

    text = await client.get(PATH, params={"budget": 100, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert [(r["external_id"], r["funded"], r["cumulative_cost"]) for r in rows][:3] == [
        ("M1", "True", "50.0"),
        ("P2", "True", "90.0"),
        ("P3", "False", "90.0"),
    ]


async def test_the_line_follows_the_ranking_and_answers_as_of_an_earlier_instant(
    reporting_pool: asyncpg.Pool[Any], client: httpx.AsyncClient
) -> None:
    async with reporting_pool.acquire() as conn:
        await rank(conn, [priced("A", 60), priced("B", 60)], 1)
        before: datetime = await conn.fetchval("SELECT clock_timestamp()")
    first = (await client.get(PATH, params={"budget": 100})).json()
    assert [i["funded"] for i in first["items"]] == [True, False]
    async with reporting_pool.acquire() as conn:
        # B is re-ranked first (a new ranking: its score above A's).
        await rank(conn, [priced("B", 60), priced("A", 60)], 2)
    now = (await client.get(PATH, params={"budget": 100})).json()
    assert [(i["external_id"], i["funded"]) for i in now["items"]] == [("B", True), ("A", False)]
    then = await client.get(PATH, params={"budget": 100, "as_of": before.isoformat()})
    assert then.status_code == 200
    assert [(i["external_id"], i["funded"]) for i in then.json()["items"]] == [
        ("A", True),
        ("B", False),
    ]


async def test_the_refusals(reporting_pool: asyncpg.Pool[Any], client: httpx.AsyncClient) -> None:
    async with reporting_pool.acquire() as conn:
        await rank(
            conn,
            [priced("E", 10), priced("U", 10, currency="USD"), priced("N", 1, currency=None)],
            1,
        )
    mixed = await client.get(PATH, params={"budget": 100})
    assert mixed.status_code == 422
    assert "the ranking has projects in EUR, USD:" in mixed.text
    named = await client.get(PATH, params={"budget": 100, "currency": "EUR"})
    assert named.status_code == 422
    assert "the ranking has projects in USD:" in named.text
    for bad in (
        {},
        {"budget": -1},
        {"budget": 100, "rule": "best"},
        {"budget": 1, "currency": "eur"},
    ):
        assert (await client.get(PATH, params=bad)).status_code == 422, bad
