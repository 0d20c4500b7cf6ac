"""The fault suite's harness: the four services as real processes on a fresh database and a
fresh topic prefix, seeded workloads published as an upstream system would, faults (signals, a
Postgres proxy that can refuse, a broker that can be frozen), and the ledger that turns the
database into the figures of the table: lost, duplicated, dead-lettered, recovery seconds.

Sizes: ``make test`` runs every scenario small; ``PMO_RELIABILITY_FULL=1`` (``make
reliability``) runs the sizes the guarantees are stated for (10,000 events, 30 s outages).

"All consumed" is never decided from the broker's end offsets (tansu's trail the true end);
every wait is on a database condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, KafkaTimeoutError

from shared.cli.publishing import partitions_of
from shared.contracts.events import DuplicatesFound, ProjectsChanged
from shared.local import free_port, tansu_binary, wait_for_port
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames
from tests.helpers import eventually

FULL = os.environ.get("PMO_RELIABILITY_FULL") == "1"
SERVICES = ("intake", "scoring", "capacity", "reporting")
TOKEN = "reliability-token-0000"
PLAN_START = "2027-01"


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int  # submissions per streaming scenario
    feed_seconds: float  # the stream is published over about this long
    outage_seconds: float  # Postgres refused / broker frozen for this long
    relay_kills: int  # kill -9 of a relay caught holding its batch
    portfolios: int
    revisions: int  # per project, scenario 8
    timeout: int  # per test, seconds


SIZES = (
    Sizes(
        events=10_000,
        feed_seconds=60,
        outage_seconds=30,
        relay_kills=10,
        portfolios=20,
        revisions=5,
        timeout=1800,
    )
    if FULL
    else Sizes(
        events=600,
        feed_seconds=6,
        outage_seconds=5,
        relay_kills=3,
        portfolios=6,
        revisions=4,
        timeout=300,
    )
)

# ----------------------------------------------------------------------------------------------
# Results: one row per scenario, printed at the end of the run (see conftest.py).


@dataclass(slots=True)
class Figures:
    scenario: str
    events: int
    lost: int
    duplicated: int
    dead_lettered: int
    recovery_seconds: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "events": self.events,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "dead_lettered": self.dead_lettered,
            "recovery_seconds": (
                round(self.recovery_seconds, 1) if self.recovery_seconds is not None else None
            ),
            "details": self.details,
        }


RESULTS: list[Figures] = []


def record(figures: Figures) -> Figures:
    """Keep the row for the table, before the test asserts on it (a failing row is shown)."""
    RESULTS.append(figures)
    return figures


# ----------------------------------------------------------------------------------------------
# Service processes.

# How long the manifests' startup probe gives a replica (30 failures, 2 s apart) before the
# orchestrator restarts it (deploy/base/*.yaml).
STARTUP_SECONDS = 60


class ServiceProcess:
    """One replica of a service: ``python -m services.<name>`` with its own HTTP port and a log
    file that every (re)start appends to."""

    def __init__(self, service: str, replica: int, env: Mapping[str, str], logs: Path) -> None:
        self.service = service
        self.replica = replica
        self.port = free_port()
        self.log = logs / f"{service}-{replica}.log"
        self._env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def name(self) -> str:
        return f"{self.service}#{self.replica}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *, ready: bool = True) -> None:
        assert not self.alive, f"{self.name} is running"
        self.starts += 1
        env = {**self._env, f"PMO_{self.service.upper()}_HTTP_PORT": str(self.port)}
        with self.log.open("ab") as handle:  # the child keeps its own descriptor
            handle.write(f"--- start {self.starts} of {self.name} ---\n".encode())
            handle.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"services.{self.service}",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=handle,
            )
        if ready:
            await self.ready()

    async def ready(self, within: float = 120) -> None:
        async def probe() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    response = await client.get(f"http://127.0.0.1:{self.port}/health/ready")
            except httpx.TransportError:
                return False
            return response.status_code == 200

        try:
            await eventually(probe, within=within, what=f"{self.name} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log ends:\n{self.tail()}") from None

    async def kill(self) -> None:
        """kill -9: no graceful anything."""
        assert self.process is not None
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self, within: float = 40) -> int:
        """SIGTERM and wait for the graceful stop; returns the exit code."""
        assert self.process is not None
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {within}s") from None

    async def metrics(self) -> dict[str, float]:
        """This process's Prometheus samples, keyed ``name{labels}``."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/metrics")
        response.raise_for_status()
        samples: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    async def metric(self, name: str) -> float:
        """The sum of ``name`` over its label sets."""
        samples = await self.metrics()
        return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))

    def memory_kib(self, field: str = "VmHWM") -> int:
        """A figure of /proc/<pid>/status: VmHWM is the peak resident set, VmRSS the current."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for {self.name}")

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Pipeline:
    """The four services as processes, ``replicas`` of each, all in one consumer group per
    service (group ids carry the test's prefix, so no two tests share a group)."""

    def __init__(
        self,
        *,
        database_url: str,
        kafka: KafkaSettings,
        logs: Path,
        services_database_url: str | None = None,
    ) -> None:
        self.kafka = kafka
        self.logs = logs
        self.replicas: dict[str, list[ServiceProcess]] = {s: [] for s in SERVICES}
        self.restarts: list[str] = []  # replicas restarted for not becoming ready (add)
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PMO_")},
            "PMO_DATABASE_URL": services_database_url or database_url,
            "PMO_DATABASE_POOL_MAX_SIZE": "4",
            "PMO_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "PMO_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "PMO_API_TOKEN": TOKEN,
            "PMO_CAPACITY_PLAN_START": PLAN_START,
        }
        for service in SERVICES:
            upper = service.upper()
            self._env[f"PMO_{upper}_GROUP_ID"] = f"{kafka.topic_prefix}pmo-{service}"
            self._env[f"PMO_{upper}_LOG_LEVEL"] = "INFO"

    def group_id(self, service: str) -> str:
        return self._env[f"PMO_{service.upper()}_GROUP_ID"]

    async def add(self, service: str, *, ready: bool = True) -> ServiceProcess:
        """A new replica, started; with ``ready``, once it is ready. One that is not ready
        within the manifests' startup probe (``STARTUP_SECONDS``) is stopped and started again
        once, as the orchestrator does: on the local broker a replica's first join of a group
        that members have just left has been seen to wait for a departed member past two
        minutes."""
        process = ServiceProcess(service, len(self.replicas[service]), self._env, self.logs)
        self.replicas[service].append(process)
        await process.start(ready=False)
        if not ready:
            return process
        try:
            await process.ready(within=STARTUP_SECONDS)
        except AssertionError as first:
            group = await describe_group(self.kafka.bootstrap_servers, self.group_id(service))
            self.restarts.append(f"{process.name}: {first}\n{service}'s consumer group: {group}")
            print(f"\n{process.name} not ready in {STARTUP_SECONDS}s: restarted; {group}")
            with contextlib.suppress(AssertionError):  # killed when the stop overruns
                await process.terminate(within=40)
            await process.start(ready=False)
            try:
                await process.ready()
            except AssertionError as exc:
                group = await describe_group(self.kafka.bootstrap_servers, self.group_id(service))
                then = f"restarted, then {exc}\n{service}'s consumer group: {group}"
                raise AssertionError(f"{self.restarts[-1]}\n{then}") from None
        return process

    async def start(self, replicas: Mapping[str, int] | None = None) -> None:
        counts = dict.fromkeys(SERVICES, 1) | dict(replicas or {})
        added = [await self.add(s, ready=False) for s, n in counts.items() for _ in range(n)]
        await asyncio.gather(*(p.ready() for p in added))

    def one(self, service: str) -> ServiceProcess:
        live = [p for p in self.replicas[service] if p.alive]
        assert live, f"no {service} replica is running"
        return live[0]

    def live(self, service: str) -> list[ServiceProcess]:
        return [p for p in self.replicas[service] if p.alive]

    async def close(self) -> None:
        for processes in self.replicas.values():
            for p in processes:
                if p.alive:
                    await p.kill()

    def logs_tail(self, lines: int = 15) -> str:
        return "\n".join(
            f"== {p.name} ==\n{p.tail(lines)}" for ps in self.replicas.values() for p in ps
        )


async def describe_group(bootstrap: str, group: str) -> str:
    """The broker's view of a consumer group (state and members), for a failure message."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        return repr(await admin.describe_consumer_groups([group]))
    except KafkaError as exc:
        return f"not described: {exc!r}"
    finally:
        await admin.close()


# ----------------------------------------------------------------------------------------------
# Infrastructure faults.


class PostgresProxy:
    """A TCP proxy between the services and Postgres that can play dead: ``outage()`` resets
    every open connection and refuses new ones (the listening socket is closed, so a connect
    gets ECONNREFUSED) until ``restore()``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused_seconds = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        for a, b in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(a, b))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            self._links.discard(writer)
            writer.transport.abort()

    async def outage(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()


class Broker:
    """A tansu broker of this test's own, so it can be frozen (SIGSTOP) without touching the
    broker other tests share. Same command line as ``shared.local.tansu``."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    f"tcp://{self.address}",
                    "--advertised-listener-url",
                    f"tcp://{self.address}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=out,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                start_new_session=True,
            )
        wait_for_port("127.0.0.1", self.port)

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ----------------------------------------------------------------------------------------------
# Workloads.

_WORDS = ("alder", "birch", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo")
ROLES = ("backend", "frontend", "qa", "data")


@dataclass(frozen=True, slots=True)
class Sent:
    """One submission as sent: its id, project and revision, and the exact bytes."""

    submission_id: str
    project_key: str
    revision: int
    withdraw: bool
    key: bytes
    value: bytes


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _project(rng: random.Random, i: int, stage: str) -> dict[str, Any]:
    start = rng.randrange(0, 12)
    months = rng.randrange(2, 7)
    return {
        "name": f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_WORDS)} {i}",
        "stage": stage,
        "value": rng.randrange(100, 5000) * 1000,
        "cost": rng.randrange(50, 2000) * 1000,
        "currency": "EUR",
        "strategic_fit": {"growth": rng.randrange(0, 6), "efficiency": rng.randrange(0, 6)},
        "risk": rng.randrange(1, 6),
        "earliest_start": f"{2027 + start // 12}-{start % 12 + 1:02d}",
        "deadline": "2029-12",
        "demand": [
            {
                "role": rng.choice(ROLES),
                "fte": rng.choice((0.5, 1.0, 2.0)),
                "start_month": 0,
                "months": months,
            }
        ],
    }


def submissions(
    seed: int,
    count: int,
    *,
    portfolios: int,
    revisions: int = 1,
    prefix: str = "rp",
) -> list[Sent]:
    """``count`` projects spread over ``portfolios`` portfolios, each with ``revisions``
    revisions in order (stages move forward; the last revision of every fifth project with
    several revisions withdraws it). The content depends on ``seed`` only, so two prefixes give
    two identical portfolio families; submission ids depend on the prefix too and are unique.
    Same arguments, same bytes."""
    rng = random.Random(seed)
    ids = random.Random(f"{seed}:{prefix}")
    stages = ("idea", "proposal", "approved", "active", "on_hold", "active")
    out: list[Sent] = []
    for i in range(count):
        portfolio = f"{prefix}{i % portfolios}"
        external_id = f"X{i:06d}"
        key = f"{portfolio}/rel/{external_id}"
        for revision in range(1, revisions + 1):
            withdraw = revisions > 1 and revision == revisions and i % 5 == 0
            message: dict[str, Any] = {
                "submission_id": _uuid(ids),
                "portfolio": portfolio,
                "source": "rel",
                "external_id": external_id,
                "revision": revision,
                "submitted_at": "2026-11-25T10:00:00Z",
                "action": "withdraw" if withdraw else "upsert",
            }
            if not withdraw:
                stage = stages[min(revision - 1, len(stages) - 1)] if revisions > 1 else "proposal"
                message["project"] = _project(rng, i, stage)
            out.append(
                Sent(
                    message["submission_id"],
                    key,
                    revision,
                    withdraw,
                    key.encode(),
                    json.dumps(message).encode(),
                )
            )
    return out


def resources(seed: int, *, portfolios: int, prefix: str = "rp") -> list[tuple[bytes, bytes]]:
    """A team per role per portfolio, so plans place some projects and defer others."""
    rng = random.Random(seed)
    ids = random.Random(f"{seed}:{prefix}")
    items = []
    for p in range(portfolios):
        for role in ROLES:
            portfolio, resource_id = f"{prefix}{p}", f"team-{role}"
            update = {
                "update_id": _uuid(ids),
                "portfolio": portfolio,
                "resource_id": resource_id,
                "revision": 1,
                "action": "upsert",
                "name": f"{role} team",
                "role": role,
                "fte": float(rng.randrange(3, 9)),
                "from": PLAN_START,
                "until": None,
            }
            items.append((f"{portfolio}/{resource_id}".encode(), json.dumps(update).encode()))
    return items


# ----------------------------------------------------------------------------------------------
# Publishing, as an upstream system does: a plain aiokafka producer. A send that fails (the
# broker may be frozen) is sent again: the inbound contract makes a resend harmless.

Item = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True, slots=True)
class Delivered:
    key: bytes | None
    partition: int
    offset: int


class Publisher:
    """A plain aiokafka producer that sends until the broker acknowledges: a failed send (the
    broker may be frozen) is sent again, which the inbound contract makes harmless."""

    def __init__(self, bootstrap: str, *, partitioner: Any = None) -> None:
        options: dict[str, Any] = {"partitioner": partitioner} if partitioner else {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=False,
            linger_ms=5,
            request_timeout_ms=20_000,
            max_request_size=4 * 1024 * 1024,  # room for the oversized records of scenario 13
            **options,
        )

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, items: Sequence[Item], within: float = 600) -> list[Delivered]:
        deadline = time.monotonic() + within
        delivered: dict[int, Delivered] = {}
        pending = list(range(len(items)))
        while pending:
            futures = []
            unsent: list[int] = []
            for n, index in enumerate(pending):
                key, value, *rest = items[index]
                headers = rest[0] if rest else None
                try:
                    futures.append(
                        await self._producer.send(topic, value, key=key, headers=headers)
                    )
                except KafkaTimeoutError:
                    # The producer's buffer stayed full (the broker is frozen): this record and
                    # the rest were never taken; they go again with the failed ones.
                    unsent = pending[n:]
                    break
            taken = pending[: len(pending) - len(unsent)]
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = list(unsent)
            for index, result in zip(taken, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append(index)
                else:
                    delivered[index] = Delivered(items[index][0], result.partition, result.offset)
            if failed and time.monotonic() > deadline:
                raise AssertionError(f"{len(failed)} records could not be published to {topic}")
            pending = sorted(failed)
        return [delivered[i] for i in range(len(items))]


async def publish(
    bootstrap: str, topic: str, items: Sequence[Item], *, partitioner: Any = None
) -> list[Delivered]:
    async with Publisher(bootstrap, partitioner=partitioner) as publisher:
        return await publisher.send(topic, items)


class Feed:
    """Publishes ``items`` in the background, in small chunks over about ``seconds``, so faults
    land mid-stream. ``sent`` counts acknowledged records."""

    def __init__(self, bootstrap: str, topic: str, items: Sequence[Item], seconds: float) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._items = items
        self._seconds = seconds
        self.sent = 0
        self.finished_at: float | None = None
        self.delivered: list[Delivered] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Feed:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        chunks = max(1, int(self._seconds * 10))
        size = max(1, -(-len(self._items) // chunks))
        started = time.monotonic()
        async with Publisher(self._bootstrap) as publisher:
            for n, begin in enumerate(range(0, len(self._items), size)):
                chunk = self._items[begin : begin + size]
                self.delivered += await publisher.send(self._topic, chunk)
                self.sent += len(chunk)
                # Pace the stream: chunk n is due at n / chunks of the feed time.
                due = started + (n + 1) * self._seconds / chunks
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        self.finished_at = time.monotonic()

    def raise_if_failed(self) -> None:
        """The feed's own error, if it stopped with one."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def reached(self, fraction: float, within: float = 600) -> None:
        target = int(len(self._items) * fraction)

        async def probe() -> bool:
            self.raise_if_failed()
            return self.sent >= target

        await eventually(probe, within=within, what=f"{fraction:.0%} of the stream sent")

    async def join(self) -> float:
        assert self._task is not None
        await self._task
        assert self.finished_at is not None
        return self.finished_at

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def read_topic(
    bootstrap: str, topic: str, enough: Any, *, within: float = 120
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, read until ``enough(records)`` is true (a
    condition the caller knows from the database; end offsets are not trusted)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = await partitions_of(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)

        async def probe() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return bool(enough(records))

        await eventually(probe, within=within, what=f"enough records on {topic}")
    finally:
        await consumer.stop()
    return records


def ce_id(record: ConsumerRecord[bytes, bytes]) -> str | None:
    for key, value in record.headers or ():
        if key == "ce_id":
            return bytes(value).decode()
    return None


# ----------------------------------------------------------------------------------------------
# The ledger: what the database says happened.

_SCHEMAS = SERVICES


@dataclass(frozen=True, slots=True)
class Expected:
    """What an in-order replay of the workload leaves: per project its newest revision, whether
    that withdrew it, and the submission that carried it."""

    projects: dict[str, tuple[int, bool, str]]
    submission_ids: frozenset[str]
    stale_ids: frozenset[str]  # ignored by intake as stale, given the order they were sent in

    @classmethod
    def of(cls, sent: Iterable[Sent]) -> Expected:
        newest: dict[str, tuple[int, bool, str]] = {}
        ids: set[str] = set()
        stale: set[str] = set()
        for s in sent:
            if s.submission_id in ids:
                continue  # a resend of the same submission
            ids.add(s.submission_id)
            current = newest.get(s.project_key)
            if current is not None and s.revision <= current[0]:
                stale.add(s.submission_id)
                continue
            if s.withdraw and current is None:
                stale.add(s.submission_id)  # withdrawing an unknown project is ignored too
                continue
            newest[s.project_key] = (s.revision, s.withdraw, s.submission_id)
        return cls(newest, frozenset(ids), frozenset(stale))


class Ledger:
    """Reads every service's schema through an admin connection to the test's database."""

    def __init__(self, conn: asyncpg.Connection[Any], topics: TopicNames) -> None:
        self.conn = conn
        self.topics = topics

    async def seen(self) -> set[str]:
        """Submission ids whose effect reached the read model (reporting applied the record
        carrying the project event they caused: its id is in reporting's inbox, and intake's
        outbox, which keeps sent rows, says which submissions it carried), or that intake
        recorded as stale (their correct end)."""
        rows = await self.conn.fetch(
            "SELECT change ->> 'submission_id' AS sid FROM intake.outbox o"
            " JOIN reporting.inbox i ON i.event_id = o.headers ->> 'ce_id',"
            " json_array_elements(convert_from(o.value, 'UTF8')::json -> 'changes') AS change"
            " WHERE o.headers ->> 'ce_type' = $1"
            " UNION SELECT submission_id FROM intake.submission_log"
            " WHERE outcome = 'ignored' AND submission_id IS NOT NULL",
            ProjectsChanged.TYPE,
        )
        return {r["sid"] for r in rows}

    async def lost(self, expected: Expected) -> set[str]:
        return set(expected.submission_ids) - await self.seen()

    async def duplicates(self) -> dict[str, int]:
        """Effects recorded more than once. Intake: submission log rows per submission (or per
        source record when unreadable), and project events per submission across the records
        that carry them. Every service: outbox rows per event id — the
        deterministic event ids mean a consumed event applied twice writes its output twice."""
        found = {
            "intake.submission_log": int(
                await self.conn.fetchval(
                    "SELECT count(*) - count(DISTINCT coalesce(submission_id,"
                    " source_topic || ':' || source_partition || ':' || source_offset))"
                    " FROM intake.submission_log"
                )
            )
        }
        # A submission's project event carried by two records would be two effects, though
        # each record's id is once in the outbox.
        found["intake.outbox entries"] = int(
            await self.conn.fetchval(
                "SELECT count(*) - count(DISTINCT change ->> 'submission_id') FROM intake.outbox o,"
                " json_array_elements(convert_from(o.value, 'UTF8')::json -> 'changes') AS change"
                " WHERE o.headers ->> 'ce_type' = $1",
                ProjectsChanged.TYPE,
            )
        )
        # The duplicate search: a project's opening searched twice would be two effects.
        found["intake.outbox duplicates found"] = int(
            await self.conn.fetchval(
                "SELECT count(*) - count(DISTINCT (entry ->> 'project_key', entry ->> 'revision'))"
                " FROM intake.outbox o,"
                " json_array_elements(convert_from(o.value, 'UTF8')::json -> 'projects') AS entry"
                " WHERE o.headers ->> 'ce_type' = $1",
                DuplicatesFound.TYPE,
            )
        )
        for schema in _SCHEMAS:
            found[f"{schema}.outbox"] = int(
                await self.conn.fetchval(
                    f"SELECT count(*) - count(DISTINCT headers ->> 'ce_id') FROM {schema}.outbox"
                    " WHERE headers ? 'ce_id'"
                )
            )
        return found

    async def dead_lettered(self) -> int:
        """Distinct dead letters written by all services (each goes through an outbox)."""
        topic = self.topics(Topic.DEAD_LETTERS)
        total = 0
        for schema in _SCHEMAS:
            total += int(
                await self.conn.fetchval(
                    f"SELECT count(DISTINCT headers ->> 'ce_id') FROM {schema}.outbox"
                    " WHERE topic = $1",
                    topic,
                )
            )
        return total

    async def unsent(self) -> int:
        total = 0
        for schema in _SCHEMAS:
            total += int(
                await self.conn.fetchval(
                    f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
                )
            )
        return total

    async def mismatches(self, expected: Expected) -> dict[str, int]:
        """Projects where a service disagrees with the in-order replay or with the service it
        consumes from. All zero means every event has flowed through and been applied. A
        project that intake withdrew before any revision of it arrived (out of order) was never
        published, so it may be absent downstream where the replay has it withdrawn."""
        keys = list(expected.projects)
        revisions = [expected.projects[k][0] for k in keys]
        withdrawn = [expected.projects[k][1] for k in keys]
        sids = [expected.projects[k][2] for k in keys]
        row = await self.conn.fetchrow(
            """
            WITH e AS (
                SELECT * FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::text[])
                    AS e(project_key, revision, withdrawn, sid)
            )
            SELECT
                count(*) FILTER (WHERE i.revision IS DISTINCT FROM e.revision
                    OR i.withdrawn IS DISTINCT FROM e.withdrawn) AS intake,
                count(*) FILTER (WHERE (s.revision IS DISTINCT FROM e.revision
                    OR s.withdrawn IS DISTINCT FROM e.withdrawn)
                    AND NOT (s.project_key IS NULL AND e.withdrawn)) AS scoring,
                count(*) FILTER (WHERE (c.revision IS DISTINCT FROM e.revision
                    OR c.withdrawn IS DISTINCT FROM e.withdrawn)
                    AND NOT (c.project_key IS NULL AND e.withdrawn)) AS capacity,
                count(*) FILTER (WHERE (r.revision IS DISTINCT FROM e.revision
                    OR r.withdrawn IS DISTINCT FROM e.withdrawn
                    OR r.submission_id IS DISTINCT FROM e.sid)
                    AND NOT (r.project_key IS NULL AND e.withdrawn)) AS reporting_project,
                count(*) FILTER (WHERE (r.score IS NULL
                    OR r.rank IS DISTINCT FROM s.published_rank
                    OR r.score IS DISTINCT FROM s.published_score)
                    AND NOT (r.project_key IS NULL AND e.withdrawn)) AS reporting_rank,
                count(*) FILTER (WHERE k.rank IS DISTINCT FROM s.published_rank
                    OR k.score IS DISTINCT FROM s.published_score) AS capacity_rank,
                count(*) FILTER (WHERE (r.plan_status IS NULL AND NOT e.withdrawn)
                    OR r.plan_status IS DISTINCT FROM p.status
                    OR r.start_month IS DISTINCT FROM p.start_month
                    OR r.end_month IS DISTINCT FROM p.end_month) AS reporting_plan,
                -- Rank moves scoring has yet to publish (docs/scoring.md, "Settling ranks").
                (SELECT count(*) FROM scoring.portfolios WHERE ranks_due_at IS NOT NULL)
                    AS scoring_moves_pending
            FROM e
            LEFT JOIN intake.projects i USING (project_key)
            LEFT JOIN scoring.projects s USING (project_key)
            LEFT JOIN capacity.projects c USING (project_key)
            LEFT JOIN capacity.ranks k USING (project_key)
            LEFT JOIN capacity.placements p USING (project_key)
            LEFT JOIN reporting.projects r USING (project_key)
            """,
            keys,
            revisions,
            withdrawn,
            sids,
        )
        assert row is not None
        return {k: int(v) for k, v in row.items() if v}

    async def settled(self, expected: Expected) -> dict[str, Any]:
        """What still stands between now and a settled pipeline (empty when settled)."""
        lost = await self.lost(expected)
        if lost:
            return {"not yet seen": len(lost)}
        # In this order, each check covers what the one before it saw: every event applied
        # (their marks committed with them), the warehouse feed's marks turned into outbox
        # rows (its records follow the read model within its interval), every row published.
        mismatches = await self.mismatches(expected)
        if mismatches:
            return mismatches
        pending = int(await self.conn.fetchval("SELECT count(*) FROM reporting.warehouse_pending"))
        if pending:
            return {"warehouse records pending": pending}
        unsent = await self.unsent()
        if unsent:
            return {"unsent outbox rows": unsent}
        return {}

    async def wait_settled(
        self, expected: Expected, *, since: float, within: float, pipeline: Pipeline | None = None
    ) -> float:
        """Wait until every submission has had its effect everywhere; returns the seconds from
        ``since`` (a ``time.monotonic()``, the end of the fault) until then."""
        last: dict[str, Any] = {}

        async def probe() -> bool:
            nonlocal last
            last = await self.settled(expected)
            return not last

        try:
            await eventually(probe, within=within, what="the pipeline to settle")
        except AssertionError as exc:
            tail = pipeline.logs_tail() if pipeline else ""
            raise AssertionError(f"{exc}; still: {last}\n{tail}") from None
        return time.monotonic() - since

    async def figures(
        self,
        scenario: str,
        expected: Expected,
        *,
        events: int | None = None,
        recovery: float | None,
        **details: Any,
    ) -> Figures:
        duplicates = await self.duplicates()
        lost = await self.lost(expected)
        return record(
            Figures(
                scenario=scenario,
                events=events if events is not None else len(expected.submission_ids),
                lost=len(lost),
                duplicated=sum(duplicates.values()),
                dead_lettered=await self.dead_lettered(),
                recovery_seconds=recovery,
                details={
                    **(
                        {"duplicates": {k: v for k, v in duplicates.items() if v}}
                        if any(duplicates.values())
                        else {}
                    ),
                    **({"lost_sample": sorted(lost)[:5]} if lost else {}),
                    **details,
                },
            )
        )

    async def in_transaction(self, service: str) -> bool:
        """Whether ``service`` has a transaction open right now (a kill lands mid-batch)."""
        n = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = $1 AND xact_start IS NOT NULL",
            f"pmo-{service}",
        )
        return bool(n)

    async def catch_in_transaction(self, service: str, within: float = 10) -> bool:
        """Wait (briefly) for ``service`` to be inside a transaction, so a kill lands mid-batch
        or mid-relay; False when it stayed idle that long (the kill then lands between)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await self.in_transaction(service):
                return True
            await asyncio.sleep(0.005)  # the poll interval of a deadline-bounded wait
        return False


# ----------------------------------------------------------------------------------------------
# One scenario's surroundings.


@dataclass
class Rig:
    """A fresh database (admin URL and connection), a fresh topic prefix with the registry's
    topics, a place for logs, and the ledger."""

    database_url: str
    conn: asyncpg.Connection[Any]
    kafka: KafkaSettings
    logs: Path
    ledger: Ledger
    pipelines: list[Pipeline] = field(default_factory=list)

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.kafka.topic_prefix)

    def topic(self, topic: Topic) -> str:
        return self.topics(topic)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    async def pipeline(
        self,
        replicas: Mapping[str, int] | None = None,
        *,
        services_database_url: str | None = None,
    ) -> Pipeline:
        pipeline = Pipeline(
            database_url=self.database_url,
            kafka=self.kafka,
            logs=self.logs,
            services_database_url=services_database_url,
        )
        self.pipelines.append(pipeline)
        await pipeline.start(replicas)
        return pipeline

    async def seed_resources(self, seed: int, portfolios: int, prefix: str = "rp") -> None:
        items = resources(seed, portfolios=portfolios, prefix=prefix)
        await publish(self.bootstrap, self.topic(Topic.RESOURCES), items)


@contextlib.asynccontextmanager
async def rig(
    server_url: str, bootstrap: str, logs: Path, *, migrated: bool = True
) -> AsyncIterator[Rig]:
    from shared.admin import ensure_topics
    from shared.migrations import migrate, service_component
    from tests.conftest import _with_database

    name = f"pmo_r_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(server_url, name)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka)
    if migrated:
        await migrate(url, [service_component(s) for s in SERVICES])
    conn = await asyncpg.connect(url)
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    the_rig = Rig(url, conn, kafka, logs, Ledger(conn, TopicNames(kafka.topic_prefix)))
    try:
        yield the_rig
    finally:
        for pipeline in the_rig.pipelines:
            await pipeline.close()
        await conn.close()
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
