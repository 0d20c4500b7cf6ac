"""What the service-level rows of ``make bench`` share: a fresh database with every service's
schema, a fresh topic prefix, the services started as separate processes (``python -m
services.<name>``) and stopped again, a submission generator, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from shared.admin import ensure_topics
from shared.local import DERIVED, DERIVED_NICE, free_ports
from shared.migrations import SERVICES, migrate, service_component
from shared.runtime import collect_as_served
from shared.settings import KafkaSettings
from shared.topics import TopicNames

API_TOKEN = "bench-token-000000"  # noqa: S105 - the local benchmark's own token
PORTFOLIOS = 8
READY_SECONDS = 60.0


def submission(i: int) -> dict[str, object]:
    """The ``i``-th synthetic submission: a new project in one of ``PORTFOLIOS`` portfolios."""
    return {
        "submission_id": str(uuid.uuid4()),
        "portfolio": f"bench{i % PORTFOLIOS}",
        "source": "bench",
        "external_id": f"P{i:06d}",
        "revision": 1,
        "submitted_at": "2026-11-25T10:00:00Z",
        "action": "upsert",
        "project": {
            "name": f"Project {i}",
            "stage": "proposal",
            "value": 1_000_000 + i,
            "cost": 400_000,
            "strategic_fit": {"growth": i % 6},
            "risk": 1 + i % 5,
            "earliest_start": "2027-01",
            "deadline": "2027-12",
            "demand": [{"role": "backend", "fte": 0.5, "start_month": 0, "months": 3}],
        },
    }


def submission_key(message: dict[str, object]) -> bytes:
    return f"{message['portfolio']}/{message['source']}/{message['external_id']}".encode()


@dataclass(frozen=True, slots=True)
class Encoded:
    """A submission as the load generator sends it."""

    key: bytes
    value: bytes
    portfolio: str
    external_id: str


def encoded_submissions(count: int) -> list[Encoded]:
    """The first ``count`` submissions, encoded before a row starts its clock and CPU meter:
    encoding them is the upstream systems' work, on their own hosts, and the load generator
    shares this machine's cores with the stack it measures."""
    encoded = []
    for i in range(count):
        message = submission(i)
        encoded.append(
            Encoded(
                submission_key(message),
                json.dumps(message).encode(),
                str(message["portfolio"]),
                str(message["external_id"]),
            )
        )
    return encoded


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank: a value that was actually observed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def paced(rate: float, count: int, send: Callable[[int], Awaitable[None]]) -> float:
    """Call ``send(i)`` at ``start + i / rate`` on the clock, for i in 0..count-1: a late call
    does not shift the ones after it. Returns the rate achieved."""
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)
    elapsed = time.perf_counter() - started
    return (count - 1) / elapsed if count > 1 and elapsed > 0 else float(count)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, services: Sequence[str] = SERVICES) -> AsyncIterator[str]:
    """A new database on ``server_url`` with the schemas of ``services`` (all by default);
    dropped afterwards."""
    name = f"pmo_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    try:
        await migrate(url, [service_component(s) for s in services])
        yield url
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass(frozen=True, slots=True)
class Stack:
    """Running service processes on their own database and topic prefix."""

    url: str  # the database, as the administrator
    kafka: KafkaSettings
    topics: TopicNames
    processes: dict[str, asyncio.subprocess.Process]
    ports: dict[str, int]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['reporting-api']}"

    def check_running(self) -> None:
        """Raise if a service process has exited: a row waiting for its work would wait on."""
        exited = {n: p.returncode for n, p in self.processes.items() if p.returncode is not None}
        if exited:
            raise RuntimeError(f"service processes exited: {exited}")

    def api(self, **options: Any) -> httpx.AsyncClient:
        """A client of the reporting API with the administrator's token."""
        return httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            **options,
        )


async def _raise_if_exited(name: str, process: asyncio.subprocess.Process, log: Path) -> None:
    if process.returncode is not None:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        raise RuntimeError(f"{name} exited with {process.returncode}:\n{text[-2000:]}")


async def _wait_ready(name: str, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    async with asyncio.timeout(READY_SECONDS), httpx.AsyncClient(timeout=2.0) as client:
        while True:
            await _raise_if_exited(name, process, log)
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(f"http://127.0.0.1:{port}/health/ready")
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.1)


# The nice value of derived work's processes (scoring, capacity, intake's duplicate search,
# reporting's others role) as the stacks run them; PMO_BENCH_DERIVED_NICE=0 runs every process
# at the same priority.
BENCH_DERIVED_NICE = int(os.environ.get("PMO_BENCH_DERIVED_NICE", str(DERIVED_NICE)))


def _processes(service: str) -> list[tuple[str, dict[str, str]]]:
    """The processes a service runs as, each (name, environment of its role). Derived work
    runs at ``BENCH_DERIVED_NICE``, as docs/operations.md ("CPU weights") says to run it
    beside a submission's path on one host."""
    nice = {f"PMO_{service.upper()}_NICE": str(BENCH_DERIVED_NICE)}
    if service == "intake":
        return [
            ("intake", {"PMO_INTAKE_ROLE": "submissions"}),
            ("intake-duplicates", {"PMO_INTAKE_ROLE": "duplicates", **nice}),
        ]
    if service == "reporting":
        return [
            ("reporting", {"PMO_REPORTING_ROLE": "others", **nice}),
            ("reporting-projects", {"PMO_REPORTING_ROLE": "projects"}),
            ("reporting-api", {"PMO_REPORTING_ROLE": "api"}),
        ]
    return [(service, nice if service in DERIVED else {})]


@contextlib.asynccontextmanager
async def service_stack(
    bootstrap: str,
    server_url: str,
    services: Sequence[str] = SERVICES,
    *,
    prepare: Callable[[str], Awaitable[None]] | None = None,
    settle: float = 8.0,
) -> AsyncIterator[Stack]:
    """Start ``services`` as processes on a fresh database and topic prefix; ``prepare(url)``
    runs on the migrated database before they start. Yields once every service is ready and
    ``settle`` seconds more have passed (consumer groups join and get their partitions), and
    stops them with SIGTERM afterwards.

    Intake and reporting run as the production manifests deploy them: intake's submissions and
    its duplicate search in processes of their own, "intake" and "intake-duplicates";
    reporting's project changes, every other topic and the API, "reporting-projects",
    "reporting" and "reporting-api" in the stack's processes and ports."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    await ensure_topics(kafka)
    async with fresh_database(server_url) as url:
        if prepare is not None:
            await prepare(url)
        # Each process: (its name in the stack, its service, its role's settings).
        launched = [
            (name, service, extra) for service in services for name, extra in _processes(service)
        ]
        ports = dict(zip((name for name, _, _ in launched), free_ports(len(launched)), strict=True))
        env = {
            **os.environ,
            "PMO_DATABASE_URL": url,
            "PMO_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PMO_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "PMO_API_TOKEN": API_TOKEN,
            "PMO_CAPACITY_PLAN_START": "2027-01",
        }
        for service in services:
            env[f"PMO_{service.upper()}_LOG_LEVEL"] = "WARNING"
            # Groups of the stack's own: on tansu a member stopped mid-rebalance may stay in
            # its group until its session ends, and the next stack's join would wait for it.
            env[f"PMO_{service.upper()}_GROUP_ID"] = f"{kafka.topic_prefix}pmo-{service}"
        with tempfile.TemporaryDirectory(prefix="pmo-bench-logs-") as logs:
            processes: dict[str, asyncio.subprocess.Process] = {}
            try:
                for name, service, extra in launched:
                    log = os.open(Path(logs) / f"{name}.log", os.O_WRONLY | os.O_CREAT, 0o600)
                    try:
                        processes[name] = await asyncio.create_subprocess_exec(
                            sys.executable,
                            "-m",
                            f"services.{service}",
                            env={
                                **env,
                                **extra,
                                f"PMO_{service.upper()}_HTTP_PORT": str(ports[name]),
                            },
                            stdout=asyncio.subprocess.DEVNULL,
                            stderr=log,
                        )
                    finally:
                        os.close(log)
                for service, process in processes.items():
                    await _wait_ready(
                        service, process, ports[service], Path(logs) / f"{service}.log"
                    )
                await asyncio.sleep(settle)
                # A process that exited after another answered on its port (taken meanwhile)
                # would leave the row waiting for work nobody does.
                for name, process in processes.items():
                    await _raise_if_exited(name, process, Path(logs) / f"{name}.log")
                yield Stack(url, kafka, TopicNames(kafka.topic_prefix), processes, ports)
            finally:
                await _stop(processes.values())


async def _stop(processes: Iterable[asyncio.subprocess.Process]) -> None:
    running = [p for p in processes if p.returncode is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    for p in running:
        try:
            await asyncio.wait_for(p.wait(), 40)
        except TimeoutError:
            p.kill()
            await p.wait()


@contextlib.contextmanager
def collector_as_served() -> Iterator[None]:
    """For a row that runs a service's code in the benchmark's own process: the cyclic
    garbage collector as a service runs it (``shared.runtime.collect_as_served``), put back as
    it was afterwards. Build the row's inputs inside it, as a service builds them after its
    freeze. Not reentrant: leaving it unfreezes everything."""
    before = gc.get_threshold()
    collect_as_served()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
        # Here, outside the row's clock, not in whichever row runs next.
        gc.collect()
