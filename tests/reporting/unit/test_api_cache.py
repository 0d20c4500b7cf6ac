"""The project lists' rendered-page cache and conditional requests, with a fake read model: a
page is read once per version of the portfolio, concurrent misses share one read, the history
(``as_of``) is read every time, JSON and CSV are kept apart, and If-None-Match gets a 304."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.reporting.api import PageCache, Rendered, SharedReads, create_api
from services.reporting.settings import ReportingSettings
from tests.reporting.unit.test_api_auth import ROW, FakeQueries

TOKEN = "admin-token-123456"
RANKING = "/api/v1/portfolios/retail/ranking"


class CountingQueries(FakeQueries):
    def __init__(self) -> None:
        super().__init__()
        self.name = "Alpha"
        self.as_of: list[datetime | None] = []

    async def projects(
        self, portfolio: str, *, limit: int, offset: int, **options: Any
    ) -> tuple[int, list[dict[str, Any]]]:
        self.calls.append((portfolio, limit, offset))
        self.as_of.append(options.get("as_of"))
        return 1, [{**ROW, "name": self.name}]


@pytest.fixture
def queries() -> CountingQueries:
    return CountingQueries()


@pytest.fixture
def client(queries: CountingQueries) -> httpx.AsyncClient:
    app = create_api(ReportingSettings(api_token=TOKEN), lambda: queries)  # type: ignore[arg-type, return-value]
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


async def test_a_page_is_read_once_per_version_of_the_portfolio(
    client: httpx.AsyncClient, queries: CountingQueries
) -> None:
    first = await client.get(RANKING)
    again = await client.get(RANKING)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    assert len(queries.calls) == 1

    queries.name, queries.version = "Alpha renamed", 2
    changed = await client.get(RANKING)
    assert changed.json()["items"][0]["name"] == "Alpha renamed"
    assert len(queries.calls) == 2
    assert changed.headers["etag"] != first.headers["etag"]


async def test_each_query_and_format_is_a_page_of_its_own(
    client: httpx.AsyncClient, queries: CountingQueries
) -> None:
    json_page = await client.get(RANKING)
    csv_page = await client.get(RANKING, headers={"Accept": "text/csv"})
    csv_param = await client.get(RANKING, params={"format": "csv"})
    second = await client.get(RANKING, params={"offset": 1})
    projects = await client.get("/api/v1/portfolios/retail/projects")
    assert json_page.headers["content-type"] == "application/json"
    assert csv_page.headers["content-type"].startswith("text/csv")
    assert csv_page.content == csv_param.content
    assert csv_page.text.startswith("project_key,")
    assert second.json()["offset"] == 1
    assert projects.status_code == 200
    # JSON, CSV (asked for twice, two ways), offset 1, and the projects list.
    assert len(queries.calls) == 4


async def test_the_history_is_read_every_time(
    client: httpx.AsyncClient, queries: CountingQueries
) -> None:
    instant = datetime(2026, 11, 25, tzinfo=UTC)
    for _ in range(2):
        page = await client.get(RANKING, params={"as_of": instant.isoformat()})
        assert page.json()["as_of"] == "2026-11-25T00:00:00Z"
    assert queries.as_of == [instant, instant]
    csv_page = await client.get(RANKING, params={"as_of": instant.isoformat(), "format": "csv"})
    assert csv_page.text.startswith("project_key,")
    assert len(queries.calls) == 3


async def test_if_none_match_gets_304_while_the_page_is_current(
    client: httpx.AsyncClient, queries: CountingQueries
) -> None:
    page = await client.get(RANKING)
    etag = page.headers["etag"]
    assert page.headers["cache-control"] == "private, no-cache"

    not_modified = await client.get(RANKING, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    for header in (f'"other", {etag}', f"W/{etag}", "*"):
        assert (await client.get(RANKING, headers={"If-None-Match": header})).status_code == 304

    # A change elsewhere in the portfolio that leaves this page as it was: still 304.
    queries.version = 2
    assert (await client.get(RANKING, headers={"If-None-Match": etag})).status_code == 304
    queries.name, queries.version = "Alpha renamed", 3
    changed = await client.get(RANKING, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert (await client.get(RANKING, headers={"If-None-Match": '"stale"'})).status_code == 200


async def test_a_refusal_is_not_cached(client: httpx.AsyncClient, queries: CountingQueries) -> None:
    await client.get(RANKING)
    anonymous = await client.get(RANKING, headers={"Authorization": "Bearer wrong"})
    assert anonymous.status_code == 401


async def test_concurrent_misses_share_one_rendering() -> None:
    cache = PageCache(budget=1_000)
    renders = 0
    rendering, release = asyncio.Event(), asyncio.Event()

    async def render() -> Rendered:
        nonlocal renders
        renders += 1
        rendering.set()
        await release.wait()
        return Rendered.of(b"page", "application/json")

    waiting = [asyncio.ensure_future(cache.get("k", "1", render)) for _ in range(5)]
    await rendering.wait()
    waiting[0].cancel()  # a client going away does not cancel the others' rendering
    release.set()
    pages = await asyncio.gather(*waiting[1:])
    assert renders == 1
    assert {p.body for p in pages} == {b"page"}
    assert (await cache.get("k", "1", render)).body == b"page"
    assert renders == 1


async def test_least_recently_used_pages_go_first_past_the_budget() -> None:
    cache = PageCache(budget=10)

    def render(body: bytes) -> Any:
        async def rendered() -> Rendered:
            return Rendered.of(body, "text/plain")

        return rendered

    await cache.get("a", "1", render(b"aaaa"))
    await cache.get("b", "1", render(b"bbbb"))
    await cache.get("a", "1", render(b"new!"))  # a hit: a is now the most recent
    await cache.get("c", "1", render(b"cccc"))  # over budget: b goes
    assert (await cache.get("a", "1", render(b"AAAA"))).body == b"aaaa"
    assert (await cache.get("b", "1", render(b"BBBB"))).body == b"BBBB"


async def test_a_shared_read_begins_after_every_request_it_answers() -> None:
    began: list[int] = []
    arrived = 0
    gates: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    async def read(key: str) -> str:
        began.append(arrived)
        gate = asyncio.Event()
        gates.put_nowait(gate)
        await gate.wait()
        return f"{key}@{len(began)}"

    reads = SharedReads(read)

    def ask() -> asyncio.Future[str]:
        nonlocal arrived
        arrived += 1
        return asyncio.ensure_future(reads.get("p"))

    first = ask()
    gate = await gates.get()
    assert began == [1]  # the first read began after the first request
    later = [ask(), ask()]  # arrive while it is under way: they wait for the next read
    gate.set()
    assert await first == "p@1"
    gate = await gates.get()
    assert began == [1, 3]
    gate.set()
    assert await asyncio.gather(*later) == ["p@2", "p@2"]


async def test_a_failed_read_reaches_its_requests_and_the_next_read_is_made_afresh() -> None:
    calls = 0

    async def read(key: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database unavailable")
        return "v"

    reads = SharedReads(read)
    with pytest.raises(ConnectionError):
        await reads.get("p")
    assert await reads.get("p") == "v"
