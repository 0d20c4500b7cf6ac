"""What changed in a portfolio between two instants, through the API on real Postgres: added,
withdrawn and re-ranked projects with their values at both instants, a change of nothing the
movement compares left out, the later instant's rank order, CSV, and the refusals."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.reporting.repository import ReadModelWriter
from shared.contracts.events import RankChange
from tests.helpers import project_changed, project_scored
from tests.reporting.integration.conftest import api_client

pytestmark = pytest.mark.integration

PORTFOLIO = "moving"
TOKEN = "movement-token-1234"


def key(external_id: str) -> str:
    return f"{PORTFOLIO}/jira/{external_id}"


async def now(conn: asyncpg.Connection[Any]) -> datetime:
    instant: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return instant


async def three_ranked(conn: asyncpg.Connection[Any]) -> None:
    """P1, P2, P3, scored 30, 20, 10: ranks 1, 2, 3."""
    async with conn.transaction():
        writer = ReadModelWriter(conn)
        await writer.apply_projects([project_changed(PORTFOLIO, p) for p in ("P1", "P2", "P3")])
        await writer.apply_scores(
            [
                project_scored(PORTFOLIO, p, ranking_version=1, rank=r, score=40.0 - 10 * r)
                for r, p in enumerate(("P1", "P2", "P3"), 1)
            ]
        )


@pytest.fixture
async def client(reporting_pool: asyncpg.Pool[Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(reporting_pool, TOKEN) as c:
        yield c


async def test_the_movement_between_two_instants(
    reporting_pool: asyncpg.Pool[Any], client: httpx.AsyncClient
) -> None:
    """At ``since`` P1, P2, P3 rank 1, 2, 3. Then P4 arrives and ranks second, P3 moves to
    first (a rank move, not a version), P2 is withdrawn, and P1 is renamed (the name is not
    compared). Between ``since`` and now: P3 up two, P4 added, P1 down two, P2 withdrawn, in
    today's rank order; between ``since`` and the instant after P4's arrival, only P4 and the
    ranks it pushed down."""
    async with reporting_pool.acquire() as conn:
        await three_ranked(conn)
        since = await now(conn)
        async with conn.transaction():
            writer = ReadModelWriter(conn)
            await writer.apply_projects([project_changed(PORTFOLIO, "P4")])
            await writer.apply_scores(
                [project_scored(PORTFOLIO, "P4", ranking_version=2, rank=2, score=25.0)]
            )
            await writer.move_ranks(
                [(2, RankChange(project_key=key(p), rank=r)) for p, r in (("P2", 3), ("P3", 4))]
            )
        arrived = await now(conn)
        async with conn.transaction():
            writer = ReadModelWriter(conn)
            await writer.move_ranks(
                [
                    (3, RankChange(project_key=key(p), rank=r))
                    for p, r in (("P3", 1), ("P1", 3), ("P2", 4))
                ]
            )
            await writer.apply_projects(
                [
                    project_changed(PORTFOLIO, "P2", 2, name="P2 r1", withdrawn=True),
                    project_changed(PORTFOLIO, "P1", 2, name="P1 renamed"),
                ]
            )

    path = f"/api/v1/portfolios/{PORTFOLIO}/movement"
    answer = await client.get(path, params={"since": since.isoformat()})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["total"] == 4
    # The later instant is said: when it was read.
    async with reporting_pool.acquire() as conn:
        read_by = await now(conn)
    assert arrived < datetime.fromisoformat(page["until"]) < read_by
    moved = [
        (i["external_id"], i["change"], i["rank_before"], i["rank_after"], i["rank_gained"])
        for i in page["items"]
    ]
    assert moved == [
        ("P3", "changed", 3, 1, 2),
        ("P4", "added", None, 2, None),
        ("P1", "changed", 1, 3, -2),
        ("P2", "withdrawn", 2, 4, -2),
    ]
    by_id = {i["external_id"]: i for i in page["items"]}
    assert by_id["P1"]["changed"] == ["rank"]  # renamed too: the name is not compared
    assert by_id["P1"]["name"] == "P1 renamed"
    assert by_id["P2"]["changed"] == ["rank", "withdrawn"]
    assert (by_id["P2"]["withdrawn_before"], by_id["P2"]["withdrawn_after"]) == (False, True)
    assert (by_id["P4"]["score_before"], by_id["P4"]["score_after"]) == (None, 25.0)
    assert by_id["P3"]["score_before"] == by_id["P3"]["score_after"] == 10.0

    until = await client.get(
        path, params={"since": since.isoformat(), "until": arrived.isoformat()}
    )
    assert [
        (i["external_id"], i["change"], i["rank_before"], i["rank_after"])
        for i in until.json()["items"]
    ] == [("P4", "added", None, 2), ("P2", "changed", 2, 3), ("P3", "changed", 3, 4)]
    paged = await client.get(path, params={"since": since.isoformat(), "limit": 1, "offset": 1})
    assert [i["external_id"] for i in paged.json()["items"]] == ["P4"]
    assert paged.json()["total"] == 4
    nothing = await client.get(
        path, params={"since": since.isoformat(), "until": since.isoformat()}
    )
    assert nothing.json()["total"] == 0

    table = await client.get(path, params={"since": since.isoformat(), "format": "csv"})
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [(r["external_id"], r["rank_gained"]) for r in rows] == [
        ("P3", "2"),
        ("P4", ""),
        ("P1", "-2"),
        ("P2", "-2"),
    ]


async def test_a_change_of_nothing_compared_is_not_movement(
    reporting_pool: asyncpg.Pool[Any], client: httpx.AsyncClient
) -> None:
    """P1 only renamed: not movement. P2, withdrawn before ``since``, is reinstated; P3 is
    scored again, its rank the same: each is listed with what changed."""
    async with reporting_pool.acquire() as conn:
        await three_ranked(conn)
        async with conn.transaction():
            await ReadModelWriter(conn).apply_projects(
                [project_changed(PORTFOLIO, "P2", 2, name="P2 r1", withdrawn=True)]
            )
        since = await now(conn)
        async with conn.transaction():
            writer = ReadModelWriter(conn)
            await writer.apply_projects(
                [
                    project_changed(PORTFOLIO, "P1", 2, name="P1 renamed"),
                    project_changed(PORTFOLIO, "P2", 3, name="P2 r1"),
                ]
            )
            await writer.apply_scores(
                [project_scored(PORTFOLIO, "P3", ranking_version=2, rank=3, score=12.5)]
            )
    answer = await client.get(
        f"/api/v1/portfolios/{PORTFOLIO}/movement", params={"since": since.isoformat()}
    )
    assert [
        (i["external_id"], i["change"], i["changed"], i["score_before"], i["score_after"])
        for i in answer.json()["items"]
    ] == [
        ("P2", "reinstated", ["withdrawn"], 20.0, 20.0),
        ("P3", "changed", ["score"], 10.0, 12.5),
    ]


async def test_the_movement_refuses_what_it_cannot_answer(
    reporting_pool: asyncpg.Pool[Any], client: httpx.AsyncClient
) -> None:
    """``until`` before ``since``, ``since`` before the kept history, no ``since``, an instant
    outside UTC's calendar: 422s naming the parameter."""
    async with reporting_pool.acquire() as conn:
        instant = await now(conn)
        await conn.execute(
            "INSERT INTO history_kept (kept_from) VALUES ($1)", instant - timedelta(days=1)
        )
    path = f"/api/v1/portfolios/{PORTFOLIO}/movement"
    for params, where, says in (
        ({"since": instant, "until": instant - timedelta(seconds=1)}, "until", "at or after since"),
        ({"since": instant - timedelta(days=2)}, "since", "has been swept"),
        ({}, "since", "Field required"),
    ):
        refused = await client.get(path, params={k: v.isoformat() for k, v in params.items()})
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"][0]
        assert detail["loc"] == ["query", where]
        assert says in detail["msg"], detail
    kept = await client.get(path, params={"since": (instant - timedelta(hours=1)).isoformat()})
    assert kept.status_code == 200, kept.text
    # An instant UTC cannot hold: refused, not a server error.
    for edge in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"):
        refused = await client.get(path, params={"since": edge})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["query", "since"]
