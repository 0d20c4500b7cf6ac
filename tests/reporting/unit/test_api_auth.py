"""The API's authentication, scopes, portfolio scoping, paging and CSV, with a fake read model
(no infrastructure)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from services.reporting.api import create_api
from services.reporting.settings import ReportingSettings

ROW = {
    "project_key": "retail/jira/A",
    "source": "jira",
    "external_id": "A",
    "name": "Alpha, the first",
    "stage": "proposal",
    "program": None,
    "sponsor": None,
    "value": 1.0,
    "cost": 2.0,
    "currency": "EUR",
    "mandatory": False,
    "risk": 2,
    "withdrawn": False,
    "revision": 1,
    "score": 50.0,
    "rank": 1,
    "explanation": [
        {"criterion": "risk", "raw": 2, "normalised": 0.75, "weight": 1, "contribution": 75}
    ],
    "model": "m",
    "model_version": 0,
    "score_cause": "project_revision",
    "override": None,
    "possible_duplicates": [],
    "plan_status": "planned",
    "start_month": "2027-01",
    "end_month": "2027-03",
    "deferral": None,
    "updated_at": None,
}


class FakeQueries:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.submitted: list[dict[str, Any]] = []
        self.version = 1

    async def projects_version(self, portfolio: str) -> str:
        return str(self.version)

    async def projects(
        self, portfolio: str, *, limit: int, offset: int, **_: Any
    ) -> tuple[int, list[dict[str, Any]]]:
        self.calls.append((portfolio, limit, offset))
        return 1, [dict(ROW)]

    async def kept_from(self) -> datetime | None:
        return None  # nothing swept

    async def portfolios(self) -> list[dict[str, Any]]:
        return [
            {"portfolio": "retail", "projects": 1, "updated_at": None},
            {"portfolio": "wholesale", "projects": 4, "updated_at": None},
        ]


TOKENS = json.dumps(
    [
        {
            "name": "bi-retail",
            "token": "retail-read-token",
            "scopes": ["read"],
            "portfolios": ["retail"],
        },
        {"name": "robot", "token": "no-scopes-token-x", "scopes": []},
    ]
)


@pytest.fixture
def queries() -> FakeQueries:
    return FakeQueries()


@pytest.fixture
def client(queries: FakeQueries) -> httpx.AsyncClient:
    async def submit(portfolio: str, message: dict[str, Any], author: str) -> None:
        queries.submitted.append(message)

    settings = ReportingSettings(
        api_token="admin-token-123456", api_tokens=TOKENS, max_page_size=50
    )
    app = create_api(settings, lambda: queries, submit)  # type: ignore[arg-type, return-value]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "admin-token-123456"}]
)
async def test_requests_without_a_valid_token_are_401(
    client: httpx.AsyncClient, headers: dict[str, str], queries: FakeQueries
) -> None:
    response = await client.get("/api/v1/portfolios/retail/projects", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert queries.calls == []


async def test_a_token_scoped_to_one_portfolio_sees_nothing_of_another(
    client: httpx.AsyncClient, queries: FakeQueries
) -> None:
    ok = await client.get("/api/v1/portfolios/retail/projects", headers=bearer("retail-read-token"))
    assert ok.status_code == 200
    other = await client.get(
        "/api/v1/portfolios/wholesale/projects", headers=bearer("retail-read-token")
    )
    assert other.status_code == 404
    listed = await client.get("/api/v1/portfolios", headers=bearer("retail-read-token"))
    assert [p["portfolio"] for p in listed.json()] == ["retail"]
    assert queries.calls == [("retail", 50, 0)]  # default page size, capped


async def test_scopes_are_enforced(client: httpx.AsyncClient, queries: FakeQueries) -> None:
    no_scope = await client.get(
        "/api/v1/portfolios/retail/projects", headers=bearer("no-scopes-token-x")
    )
    assert no_scope.status_code == 403
    body = {"optimise": True}
    reader = await client.post(
        "/api/v1/portfolios/retail/scenarios", json=body, headers=bearer("retail-read-token")
    )
    assert reader.status_code == 403
    assert queries.submitted == []
    admin = await client.post(
        "/api/v1/portfolios/retail/scenarios", json=body, headers=bearer("admin-token-123456")
    )
    assert admin.status_code == 202
    assert queries.submitted[0]["action"] == "optimise"
    assert queries.submitted[0]["author"] == "admin"


async def test_page_size_is_capped(client: httpx.AsyncClient, queries: FakeQueries) -> None:
    response = await client.get(
        "/api/v1/portfolios/retail/projects?limit=100000&offset=5",
        headers=bearer("admin-token-123456"),
    )
    assert response.status_code == 200
    assert response.json()["limit"] == 50
    assert queries.calls == [("retail", 50, 5)]


async def test_csv_on_request(client: httpx.AsyncClient) -> None:
    for extra in ({"params": {"format": "csv"}}, {"headers": {"Accept": "text/csv"}}):
        headers = {**bearer("admin-token-123456"), **extra.get("headers", {})}
        response = await client.get(
            "/api/v1/portfolios/retail/projects", headers=headers, params=extra.get("params")
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        lines = response.text.splitlines()
        assert lines[0].startswith("project_key,source,external_id,name")
        assert '"Alpha, the first"' in lines[1]
        assert '""criterion"": ""risk""' in lines[1]
