"""The reporting-API row of ``make bench``: the ranking endpoint
(``GET /api/v1/portfolios/{p}/ranking``, default page size) of a 10,000-project portfolio under
50 concurrent clients, each with its own connection, for a fixed time; p50/p99 and requests per
second. The same load on ``/health/live`` (no database, no auth) runs next to it: the clients
share the machine with the server, so the trivial endpoint shows what the client side and the
HTTP stack cost on their own.

The read model is written directly into a fresh database (as reporting's integration tests do)
and reporting runs as its own process, as in production."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import asyncpg
import httpx

from bench.harness import API_TOKEN, percentile, service_stack

PORTFOLIO = "bench"
CRITERIA = ("strategic_fit.growth", "strategic_fit.efficiency", "value_for_money", "risk")
COLUMNS = (
    "project_key",
    "portfolio",
    "source",
    "external_id",
    "name",
    "stage",
    "program",
    "sponsor",
    "value",
    "cost",
    "currency",
    "mandatory",
    "risk",
    "withdrawn",
    "revision",
    "submission_id",
    "score",
    "rank",
    "explanation",
    "ranking_version",
    "model",
    "model_version",
    "score_cause",
    "plan_status",
    "start_month",
    "end_month",
    "deferral",
    "plan_version",
)


@dataclass(frozen=True, slots=True)
class Load:
    p50_ms: float
    p99_ms: float
    per_second: float
    requests: int


@dataclass(frozen=True, slots=True)
class ApiResult:
    ranking: Load
    live: Load


def _rows(projects: int) -> list[tuple[object, ...]]:
    rnd = random.Random(8)  # noqa: S311 - synthetic data
    scores = sorted((rnd.uniform(0, 100) for _ in range(projects)), reverse=True)
    rows: list[tuple[object, ...]] = []
    for i, score in enumerate(scores):
        weights = [0.2, 0.2, 0.4, 0.2]
        normalised = [rnd.random() for _ in CRITERIA]
        explanation = [
            {
                "criterion": c,
                "raw": round(n * 5),
                "normalised": n,
                "weight": w,
                "contribution": n * w * 100,
            }
            for c, n, w in zip(CRITERIA, normalised, weights, strict=True)
        ]
        planned = i < projects * 0.7
        deferral = None
        if not planned:
            deferral = json.dumps(
                {
                    "code": "capacity",
                    "detail": "backend short of 0.5 FTE in 2027-03",
                    "role": "backend",
                    "month": "2027-03",
                    "shortfall_fte": 0.5,
                }
            )
        rows.append(
            (
                f"{PORTFOLIO}/jira/P{i:05d}",
                PORTFOLIO,
                "jira",
                f"P{i:05d}",
                f"Project {i}",
                rnd.choice(("idea", "proposal", "approved", "active")),
                f"program-{i % 40}",
                f"sponsor-{i % 25}",
                rnd.uniform(1e5, 1e7),
                rnd.uniform(1e4, 5e6),
                "EUR",
                i % 50 == 0,
                1 + i % 5,
                False,
                1,
                f"submission-{i}",
                score,
                i + 1,
                json.dumps(explanation),
                1,
                "weighted-default",
                1,
                "project_revision",
                "planned" if planned else "deferred",
                "2027-01" if planned else None,
                "2027-06" if planned else None,
                deferral,
                1,
            )
        )
    return rows


async def populate(url: str, projects: int) -> None:
    """``projects`` ranked, scored and planned projects of one portfolio in the read model."""
    # The history trigger names its table without a schema, as reporting's role sees it.
    conn = await asyncpg.connect(url, server_settings={"search_path": "reporting"})
    try:
        await conn.copy_records_to_table("projects", columns=COLUMNS, records=_rows(projects))
        await conn.execute("ANALYZE projects")
    finally:
        await conn.close()


async def load(url: str, path: str, clients: int, seconds: float, warmup: float = 1.0) -> Load:
    """``clients`` closed-loop clients, each with its own connection, asking for ``path`` for
    ``warmup`` + ``seconds``; only requests started after the warm-up count."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    latencies: list[float] = []
    started = time.perf_counter()
    measuring = started + warmup
    deadline = measuring + seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as http:
            while (asked := time.perf_counter()) < deadline:
                response = await http.get(path)
                response.raise_for_status()
                if asked >= measuring:
                    latencies.append(time.perf_counter() - asked)

    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - measuring
    return Load(
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        len(latencies) / elapsed,
        len(latencies),
    )


async def reporting_api(
    bootstrap: str,
    server_url: str,
    *,
    projects: int = 10_000,
    clients: int = 50,
    seconds: float = 8.0,
) -> ApiResult:
    async def prepare(url: str) -> None:
        await populate(url, projects)

    async with service_stack(
        bootstrap, server_url, ("reporting",), prepare=prepare, settle=0.0
    ) as stack:
        ranking = f"/api/v1/portfolios/{PORTFOLIO}/ranking"
        async with stack.api() as api:
            page = (await api.get(ranking)).raise_for_status().json()
        if page["total"] != projects or len(page["items"]) != page["limit"]:
            raise RuntimeError(f"unexpected ranking page: total {page['total']}")
        return ApiResult(
            ranking=await load(stack.api_url, ranking, clients, seconds),
            live=await load(stack.api_url, "/health/live", clients, seconds),
        )
