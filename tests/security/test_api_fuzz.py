"""The reporting API, served by its own process over real HTTP from a seeded read model, against
its committed OpenAPI document (docs/openapi.json): schemathesis-generated requests (valid and
invalid) never get a 5xx and get answers that match the document; every operation refuses a
missing token, a missing scope and another portfolio; page sizes are capped; hostile strings in
every string parameter are data, never code, and leave the database as it was."""

from __future__ import annotations

import asyncio
import csv as csv_module
import io
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_headers_conformance,
    response_schema_conformance,
)

from shared.migrations import SERVICES, migrate, service_component
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import TopicNames
from tests.helpers import eventually
from tests.security.processes import service_process
from tests.security.seed import DONE_SCENARIO, fingerprint, seed_reporting

pytestmark = pytest.mark.integration

OPENAPI = Path(__file__).parents[2] / "docs" / "openapi.json"
PAGE_CAP = 25
PORTFOLIOS = {"retail": 40, "wholesale": 5}
ADMIN = "admin-token-fuzzing-0001"
READER = "reader-token-fuzzing-0002"
RETAIL_READER = "retail-reader-token-0003"
RETAIL_ADMIN = "retail-admin-token-00004"
NO_SCOPES = "no-scopes-token-fuzz-05"
TOKENS = [
    {"name": "reader", "token": READER, "scopes": ["read"]},
    {"name": "retail-reader", "token": RETAIL_READER, "scopes": ["read"], "portfolios": ["retail"]},
    {
        "name": "retail-admin",
        "token": RETAIL_ADMIN,
        "scopes": ["read", "admin"],
        "portfolios": ["retail"],
    },
    {"name": "robot", "token": NO_SCOPES, "scopes": []},
]
INJECTIONS = [
    "' OR 1=1 --",
    "'; DROP TABLE reporting.projects; --",
    "retail' UNION SELECT token FROM pg_authid --",
    "1; SELECT pg_sleep(10)",
    "../../../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "nul\x00byte",
    "\u202eevil\u202c",
    "漢字🚀",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "${jndi:ldap://example.invalid/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "*",
    "%",
    "x" * 10_000,
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: tuple[dict[str, Any], ...]
    has_body: bool

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def url(self, **path: str) -> str:
        values = {"portfolio": "retail", "source": "jira", "external_id": "P001"}
        values["request_id"] = DONE_SCENARIO
        values.update(path)
        return re.sub(
            r"\{(\w+)\}", lambda m: quote(values[m[1]], safe="", errors="surrogatepass"), self.path
        )

    def required(self) -> dict[str, str]:
        """A value for each required query parameter (an instant before any data: the
        answer covers everything; an amount of money)."""
        examples = {"date-time": "2000-01-01T00:00:00Z", "number": "1000000"}

        def kind(schema: dict[str, Any]) -> str | None:
            return schema.get("format") or schema.get("type")

        required = [p for p in self.parameters if p["in"] == "query" and p.get("required")]
        unknown = [p["name"] for p in required if kind(p["schema"]) not in examples]
        assert not unknown, f"{self.label}: give an example for the required {unknown}"
        return {p["name"]: examples[str(kind(p["schema"]))] for p in required}

    def strings(self) -> list[dict[str, Any]]:
        """The parameters whose schema admits a string without a fixed set of values."""
        out = []
        for p in self.parameters:
            schema = p["schema"]
            options = schema.get("anyOf", [schema])
            if any(
                o.get("type") == "string" and "enum" not in o and "format" not in o for o in options
            ):
                out.append(p)
        return out


DOCUMENT: dict[str, Any] = json.loads(OPENAPI.read_text())


def operations(document: dict[str, Any]) -> list[Operation]:
    return [
        Operation(method, path, tuple(spec.get("parameters", [])), "requestBody" in spec)
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
    ]


OPERATIONS = operations(DOCUMENT)
BODY = {"optimise": True, "time_limit_seconds": 1}


@dataclass
class Api:
    url: str
    database: DatabaseSettings
    accepted_scenarios: list[str] = field(default_factory=list)

    async def request(
        self, op: Operation, token: str | None, *, path: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        headers = bearer(token) if token else {}
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            response = await client.request(
                op.method,
                op.url(**(path or {})),
                headers=headers,
                json=BODY if op.has_body else None,
                **kw,
            )
        if op.method == "post" and response.status_code == 202:
            self.accepted_scenarios.append(response.json()["request_id"])
        return response


@pytest.fixture
async def api(
    database: DatabaseSettings, kafka: KafkaSettings, tmp_path: Path
) -> AsyncIterator[Api]:
    await migrate(database.url, [service_component(s) for s in SERVICES])
    await seed_reporting(database, TopicNames(kafka.topic_prefix), PORTFOLIOS)
    async with service_process(
        "reporting",
        database,
        kafka,
        tmp_path,
        PMO_API_TOKEN=ADMIN,
        PMO_API_TOKENS=json.dumps(TOKENS),
        PMO_REPORTING_MAX_PAGE_SIZE=str(PAGE_CAP),
        PMO_REPORTING_LOG_LEVEL="WARNING",
        # One consumer: the API is under test, and a second consumer of the group would add a
        # rebalance (about 9 s on tansu) to every test's start.
        PMO_REPORTING_PROJECTS_LANE="false",
    ) as process:
        # The warehouse feed publishes the seeded projects' records once it runs, claiming and
        # clearing their marks: wait for it, so that the tables a test compares before and
        # after change only by what the test asks.
        await eventually(lambda: warehouse_drained(database), what="the seed's warehouse marks")
        yield Api(process.url, database)
        assert process.alive, "the API process survived the test"


async def warehouse_drained(database: DatabaseSettings) -> bool:
    conn = await asyncpg.connect(database.url)
    try:
        pending: int = await conn.fetchval("SELECT count(*) FROM reporting.warehouse_pending")
        return pending == 0
    finally:
        await conn.close()


async def snapshot(database: DatabaseSettings) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(database.url)
    try:
        found = {}
        for schema in SERVICES:
            for table, value in (await fingerprint(conn, schema)).items():
                found[f"{schema}.{table}"] = value
        return found
    finally:
        await conn.close()


@dataclass
class FuzzReport:
    cases: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    accepted_scenarios: int = 0
    failures: list[str] = field(default_factory=list)


def run_cases(
    url: str,
    operation: Any,
    mode: GenerationMode,
    max_examples: int,
    checks: list[Any],
    report: FuzzReport,
) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=bearer(ADMIN), timeout=30)
        report.cases[label] = report.cases.get(label, 0) + 1
        status = response.status_code
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if case.method.upper() == "POST" and status == 202:
            report.accepted_scenarios += 1
        try:
            case.validate_response(response, checks=checks, headers=bearer(ADMIN))
        except FailureGroup as exc:
            report.failures.append(f"{label} [{mode.value}]: {exc}"[:2000])

    run()


def fuzz(url: str, max_examples: int) -> FuzzReport:
    """Schemathesis over every operation of the committed document, with valid and invalid
    generated inputs, sent with the administrator's token so that they reach the handlers (the
    tests below cover requests without one).

    Checks: no 5xx; a body that matches the documented schema for its status; documented
    headers. Not ``negative_data_rejection``: FastAPI ignores unknown query parameters, takes the
    last of repeated ones and reads a number as a Unix time for ``as_of`` — lenient, not unsafe
    — and what must be refused is pinned by the explicit tests below. Not
    ``status_code_conformance``: see ``test_every_answer_the_api_gives_is_documented``."""
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    checks = [not_a_server_error, response_schema_conformance, response_headers_conformance]
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_cases(url, operation, mode, max_examples, checks, report)
    return report


# Hypothesis warns when the global ``random`` module's state changes while it draws a case,
# taking it for a strategy's use of it. The fuzz runs on a worker thread, and an aiokafka
# consumer alive in this process shuffles its fetch's partitions with ``random`` on the event
# loop's thread meanwhile: in the failure seen, one that a failed earlier test had left
# running. That warning (an error under this suite's filter) is not about the API.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(api: Api) -> None:
    before = await snapshot(api.database)
    started = time.monotonic()
    report = await asyncio.to_thread(fuzz, api.url, 20)
    took = time.monotonic() - started
    cases = sum(report.cases.values())
    print(
        f"\nfuzz: {cases} cases over {len(report.cases)} operations in {took:.1f}s;"
        f" statuses {dict(sorted(report.statuses.items()))}"
    )
    assert len(report.cases) == len(OPERATIONS)
    assert not report.failures, "\n\n".join(report.failures)
    await assert_intact(api.database, before, report.accepted_scenarios)


async def assert_intact(
    database: DatabaseSettings, before: dict[str, tuple[int, str]], accepted: int
) -> None:
    """Every table as it was, except the outbox (its relay marks rows sent) and scenarios,
    which hold one more row per accepted scenario request."""
    after = await snapshot(database)
    scenarios = "reporting.scenarios"
    assert after[scenarios][0] == before[scenarios][0] + accepted
    for table in ("reporting.scenarios", "reporting.outbox"):
        before.pop(table)
        after.pop(table)
    assert after == before


def raw_url(
    op: Operation, path: dict[str, str] | None = None, query: dict[str, str] | None = None
) -> str:
    """The URL with every value percent-encoded as UTF-8 bytes, lone surrogates included, so
    that bytes no client library would send still reach the server."""
    url = op.url(**(path or {}))
    query = op.required() | (query or {})
    if query:
        url += "?" + "&".join(
            f"{quote(k, safe='')}={quote(v, safe='', errors='surrogatepass')}"
            for k, v in query.items()
        )
    return url


async def send(
    client: httpx.AsyncClient,
    op: Operation,
    headers: dict[str, str],
    *,
    path: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = BODY,
) -> httpx.Response:
    return await client.request(
        op.method,
        raw_url(op, path, query),
        headers=headers,
        json=body if op.has_body else None,
    )


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as c:
        yield c


WITH_PORTFOLIO = [op for op in OPERATIONS if "{portfolio}" in op.path]
# What the API's model says: reading is GET, anything else changes something and needs admin.
ADMIN_OPERATIONS = [op for op in OPERATIONS if op.method != "get"]
PAGED = [op for op in OPERATIONS if any(p["name"] == "limit" for p in op.parameters)]


async def test_every_operation_refuses_a_missing_or_unknown_token(
    client: httpx.AsyncClient,
) -> None:
    refusals = 0
    for op in OPERATIONS:
        for headers in (
            {},
            bearer("not-a-token-of-this-api"),
            {"Authorization": "Bearer"},
            {"Authorization": ADMIN},  # no scheme
            {"Authorization": f"Basic {ADMIN}"},
            {"Authorization": f"Bearer {ADMIN} trailing"},
            {"Authorization": f"Bearer {ADMIN.upper()}"},
        ):
            response = await send(client, op, headers)
            assert response.status_code == 401, (op.label, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "retail" not in response.text
            refusals += 1
        # The body of a request without a token is not looked at either.
        if op.has_body:
            response = await client.request(
                op.method,
                op.url(),
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 401, (op.label, response.text)
            refusals += 1
    assert refusals >= 7 * len(OPERATIONS)


async def test_scopes_are_enforced_on_every_operation(client: httpx.AsyncClient, api: Api) -> None:
    assert ADMIN_OPERATIONS, "the document has operations that change something"
    for op in OPERATIONS:
        response = await send(client, op, bearer(NO_SCOPES))
        assert response.status_code == 403, (op.label, response.text)
    for op in ADMIN_OPERATIONS:
        response = await send(client, op, bearer(READER))
        assert response.status_code == 403, (op.label, response.text)
        allowed = await send(client, op, bearer(ADMIN))
        assert allowed.status_code == 202, (op.label, allowed.text)
        api.accepted_scenarios.append(allowed.json()["request_id"])
    for op in OPERATIONS:
        if op in ADMIN_OPERATIONS:
            continue
        response = await send(client, op, bearer(READER))
        assert response.status_code == 200, (op.label, response.text)


async def test_a_portfolio_scoped_token_learns_nothing_of_other_portfolios(
    client: httpx.AsyncClient,
) -> None:
    for op in WITH_PORTFOLIO:
        other = await send(client, op, bearer(RETAIL_READER), path={"portfolio": "wholesale"})
        absent = await send(client, op, bearer(RETAIL_READER), path={"portfolio": "atlantis"})
        assert other.status_code == 404, (op.label, other.text)
        # An existing portfolio and an absent one look alike.
        assert (other.status_code, other.text) == (absent.status_code, absent.text)
        assert "wholesale" not in other.text
        own = await send(client, op, bearer(RETAIL_READER), path={"portfolio": "retail"})
        assert own.status_code == (403 if op in ADMIN_OPERATIONS else 200), (op.label, own.text)
    for op in ADMIN_OPERATIONS:
        other = await send(client, op, bearer(RETAIL_ADMIN), path={"portfolio": "wholesale"})
        assert other.status_code == 404, (op.label, other.text)
    listed = await client.get("/api/v1/portfolios", headers=bearer(RETAIL_READER))
    assert [p["portfolio"] for p in listed.json()] == ["retail"]
    everything = await client.get("/api/v1/portfolios", headers=bearer(READER))
    assert [p["portfolio"] for p in everything.json()] == sorted(PORTFOLIOS)


async def test_page_sizes_are_capped_and_paging_never_fails(client: httpx.AsyncClient) -> None:
    assert PAGED, "the document has paged operations"
    for op in PAGED:
        full = (await send(client, op, bearer(ADMIN), query={"limit": "1"})).json()["total"]
        for limit in (PAGE_CAP + 1, 10**6, 2**63 - 1, 2**64, 10**40):
            response = await send(client, op, bearer(ADMIN), query={"limit": str(limit)})
            assert response.status_code == 200, (op.label, limit, response.text)
            page = response.json()
            assert page["limit"] == PAGE_CAP
            assert len(page["items"]) == min(PAGE_CAP, full)
            csv = await send(
                client, op, bearer(ADMIN), query={"limit": str(limit), "format": "csv"}
            )
            # Rows, not lines: a quoted field may hold a line break.
            assert len(list(csv_module.reader(io.StringIO(csv.text)))) <= PAGE_CAP + 1
        for limit in ("0", "-1", "1.5", "ten"):
            response = await send(client, op, bearer(ADMIN), query={"limit": limit})
            assert response.status_code == 422, (op.label, limit, response.text)
        # Past the end: an empty page, or a 422 for an offset no database column can hold;
        # never a server error.
        for offset in (full, 2**31, 2**63 - 1, 2**63, 10**30):
            response = await send(client, op, bearer(ADMIN), query={"offset": str(offset)})
            assert response.status_code in (200, 422), (op.label, offset, response.text)
            if response.status_code == 200:
                assert response.json()["items"] == []
    # The cap bites where there is more than a page to give.
    projects = next(op for op in PAGED if op.path.endswith("/projects"))
    page = (await send(client, projects, bearer(ADMIN), query={"limit": "1000"})).json()
    assert (page["total"], len(page["items"])) == (PORTFOLIOS["retail"], PAGE_CAP)


def assert_nothing_found(op: Operation, body: Any) -> None:
    """A 200 for a hostile value is an empty answer: no rows, no counts."""
    assert isinstance(body, dict), (op.label, body)
    for key, value in body.items():
        if isinstance(value, list):
            assert value == [], (op.label, key, value)
        if key in ("total", "rejected_submissions", "projects"):
            assert value == 0, (op.label, key, value)


async def test_hostile_strings_in_every_parameter_are_data_not_code(
    client: httpx.AsyncClient, api: Api
) -> None:
    before = await snapshot(api.database)
    tried = 0
    accepted = 0
    statuses: dict[int, int] = {}
    server_errors: list[str] = []
    for op in OPERATIONS:
        for parameter in op.parameters:
            name, where = parameter["name"], parameter["in"]
            for text in INJECTIONS:
                path = {name: text} if where == "path" else None
                query = {name: text} if where == "query" else None
                try:
                    response = await send(client, op, bearer(ADMIN), path=path, query=query)
                except httpx.TransportError as exc:  # the server hung up: no answer at all
                    server_errors.append(f"{op.label} {where} {name}={text[:40]!r}: {exc!r}")
                    continue
                tried += 1
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    server_errors.append(
                        f"{op.label} {where} {name}={text[:40]!r}: {response.status_code}"
                        f" {response.text[:200]}"
                    )
                elif response.status_code == 202:
                    accepted += 1
                elif response.status_code == 200 and not response.headers[
                    "content-type"
                ].startswith("text/csv"):
                    assert_nothing_found(op, response.json())
                else:
                    assert 400 <= response.status_code < 500, (op.label, name, text[:40])
    print(f"\ninjection: {tried} requests, statuses {dict(sorted(statuses.items()))}")
    assert server_errors == [], "\n".join(server_errors)
    assert tried >= len(INJECTIONS) * sum(len(op.parameters) for op in OPERATIONS)
    await assert_intact(api.database, before, accepted)


async def test_every_answer_the_api_gives_is_documented() -> None:
    """What the tests above receive is in the committed document: 401 on every operation,
    403 on every operation (scopes), 404 on every portfolio operation (other portfolios), and
    CSV wherever ``format=csv`` is offered."""
    missing = []
    for path, methods in DOCUMENT["paths"].items():
        for method, spec in methods.items():
            label = f"{method.upper()} {path}"
            expected = {"401", "403"} | ({"404"} if "{portfolio}" in path else set())
            missing += [f"{label}: {code}" for code in sorted(expected - set(spec["responses"]))]
            if any(p["name"] == "format" for p in spec.get("parameters", [])):
                content = spec["responses"]["200"].get("content", {})
                if "text/csv" not in content:
                    missing.append(f"{label}: 200 text/csv")
    assert missing == [], "undocumented answers:\n" + "\n".join(missing)
