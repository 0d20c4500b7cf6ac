"""The reporting-API row of ``make bench``: the ranking endpoint
(``GET /api/v1/portfolios/{p}/ranking``, default page size) of a 10,000-project portfolio under
50 concurrent closed-loop clients, each with its own keep-alive connection, for a fixed time;
p50/p99 of every request's latency and requests per second. The same load on ``/health/live``
(no database, no auth) runs next to it, so the HTTP stack's own cost is visible.

The read model is written directly into a fresh database (as reporting's integration tests do)
and reporting runs as its own process, as in production.

The load generator shares the machine's cores with the server, so its own cost must stay small
or the row measures the client. An httpx client in the benchmark's process spent more CPU per
request than the server did (16 ms against 13 ms a ranking request, 13 ms against 3 ms a
``/health/live``: 55-80 % of the CPU the row used), and aiohttp about 0.2-0.3 ms a request
(20-25 % once the server answered in under a millisecond). This one is the loop wrk runs: a
separate process on uvloop with httptools' C parser (both pinned dependencies of the services),
one protocol object per connection that sends the next request from the callback that completes
the previous answer, with no coroutine in between, timing each request from the write of its
bytes to the end of its answer. It needs nothing installed beyond the lock file. Every answer's
status is checked, and the CPU of the client, the server and the database's backends over the
measured window is read from /proc, so the client's share is reported with the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
import httptools
import uvloop

from bench.cpu import CpuMeter, postgres_pids
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
    client_cpu_share: float = 0.0  # of the CPU the client, the server and Postgres used
    server_cpu_ms: float = 0.0  # the server's CPU per request
    machine_busy: float = 0.0  # share of all cores busy (any process) during the window


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


class _Run:
    """What the connections of one load share: the clock, and every answer's latency."""

    def __init__(self, measuring: float, deadline: float, connections: int) -> None:
        self.measuring = measuring
        self.deadline = deadline
        self.latencies: list[float] = []
        self.last = measuring
        self.failures: list[str] = []
        self.open = connections
        self.done = asyncio.get_running_loop().create_future()

    def answered(self, asked: float, now: float, status: int, size: int) -> None:
        if status != 200 or size == 0:
            self.failures.append(f"status {status}, {size} bytes")
        elif asked >= self.measuring:
            self.latencies.append(now - asked)
            self.last = now

    def closed(self, error: BaseException | None) -> None:
        if error is not None:
            self.failures.append(repr(error))
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


class _Client(asyncio.Protocol):
    """One keep-alive connection that sends its request again as soon as each answer is
    complete, until the deadline: a closed loop."""

    def __init__(self, request: bytes, run: _Run) -> None:
        self._request = request
        self._run = run
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._asked = 0.0
        self._size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._size = 0
        self._asked = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._run.failures.append(repr(exc))
            assert self._transport is not None
            self._transport.close()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        self._run.answered(self._asked, now, self._parser.get_status_code(), self._size)
        assert self._transport is not None
        if now < self._run.deadline and not self._run.failures:
            self._send()
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._run.closed(exc)


async def _generate(
    url: str, path: str, clients: int, seconds: float, warmup: float, server: int, database: str
) -> dict[str, Any]:
    """The load itself, in the load generator's process; the CPU of this process, of
    ``server`` and of the backends of ``database`` is counted over the measured window."""
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {API_TOKEN}\r\nAccept: */*\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    meter = CpuMeter(
        {
            "client": lambda: [os.getpid()],
            "server": lambda: [server],
            "postgres": lambda: postgres_pids(database),
        }
    )
    started = time.perf_counter()
    run = _Run(started + warmup, started + warmup + seconds, clients)
    loop.call_at(loop.time() + warmup, meter.start)
    async with asyncio.timeout(warmup + seconds + 60):
        for _ in range(clients):
            await loop.create_connection(lambda: _Client(request, run), host, port)
        await run.done
    use = meter.stop()  # after the last answer: requests started in the window all count
    if run.failures:
        raise RuntimeError(f"{path}: {len(run.failures)} failed requests, e.g. {run.failures[0]}")
    count = len(run.latencies)
    spent = use.total
    return asdict(
        Load(
            p50_ms=percentile(run.latencies, 50) * 1000,
            p99_ms=percentile(run.latencies, 99) * 1000,
            per_second=count / (run.last - run.measuring),
            requests=count,
            client_cpu_share=use.seconds["client"] / spent if spent else 0.0,
            server_cpu_ms=use.seconds["server"] / count * 1000,
            machine_busy=use.machine_busy,
        )
    )


async def load(
    url: str,
    path: str,
    clients: int,
    seconds: float,
    *,
    server_pid: int,
    database: str,
    warmup: float = 1.0,
) -> Load:
    """``clients`` closed-loop clients, each with its own connection, asking for ``path`` for
    ``warmup`` + ``seconds`` from a process of their own; only requests started after the
    warm-up count."""
    args = json.dumps([url, path, clients, seconds, warmup, server_pid, database])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.api", args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator exited with {process.returncode}")
    return Load(**json.loads(out))


def _main(args: str) -> None:
    result = uvloop.run(_generate(*json.loads(args)))
    print(json.dumps(result))


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
        server = stack.processes["reporting-api"].pid
        database = urlsplit(stack.url).path.lstrip("/")

        async def under_load(path: str) -> Load:
            return await load(
                stack.api_url, path, clients, seconds, server_pid=server, database=database
            )

        return ApiResult(ranking=await under_load(ranking), live=await under_load("/health/live"))


if __name__ == "__main__":
    _main(sys.argv[1])
