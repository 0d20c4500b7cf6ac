"""The API's authentication and paging, with a fake read model (no infrastructure)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.reporting.api import create_api
from services.reporting.settings import ReportingSettings


class FakeQueries:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    async def projects(
        self, portfolio: str, *, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        self.calls.append((portfolio, limit, offset))
        return 0, []


@pytest.fixture
def queries() -> FakeQueries:
    return FakeQueries()


@pytest.fixture
async def client(queries: FakeQueries) -> httpx.AsyncClient:
    app = create_api(ReportingSettings(api_token="s3cret", max_page_size=50), lambda: queries)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]
)
async def test_requests_without_the_token_are_401(
    client: httpx.AsyncClient, headers: dict[str, str], queries: FakeQueries
) -> None:
    response = await client.get("/api/v1/portfolios/retail/projects", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert queries.calls == []


async def test_page_size_is_capped(client: httpx.AsyncClient, queries: FakeQueries) -> None:
    response = await client.get(
        "/api/v1/portfolios/retail/projects?limit=100000&offset=5",
        headers={"Authorization": "Bearer s3cret"},
    )
    assert response.status_code == 200
    assert response.json()["limit"] == 50
    assert queries.calls == [("retail", 50, 5)]
