"""A service's runtime: pool, broker, outbox relay, health and metrics endpoints, lifecycle.

Every service's composition root (``services/<name>/app.py``) builds one ``ServiceRuntime``,
registers its subscribers on ``runtime.broker`` and serves ``runtime.http_app()``. Nothing
connects until ``start()``; ``stop()`` lets the in-flight batch finish and commit, leaves the
consumer group, flushes the outbox once more and closes the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs, metrics, tracing
from shared.broker import make_broker, make_producer
from shared.consumer import (
    BatchHandler,
    BatchRunner,
    RetryPolicy,
    leave_first_generation,
    membership,
    offset_commits,
    subscribe,
)
from shared.consumer_record import Record
from shared.db import create_pool
from shared.deadletter import dead_letter, dead_letter_id
from shared.errors import Reason, is_transient
from shared.outbox import OutboxRelay, producer_publish
from shared.settings import DatabaseSettings, KafkaSettings, ServiceSettings, service_database_url
from shared.topics import Topic, TopicNames
from shared.uow import PostgresUnitOfWork

log = logging.getLogger(__name__)


STARTUP_REPORT_SECONDS = 15
T = TypeVar("T")


async def _reporting_delays(what: str, step: Awaitable[T]) -> T:
    """Await one startup step, logging a warning every ``STARTUP_REPORT_SECONDS`` it takes, so
    a replica that does not become ready says what it waits for (a group join waits for every
    member to rejoin; a database or broker may be unreachable)."""
    started = time.monotonic()
    task = asyncio.ensure_future(step)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=STARTUP_REPORT_SECONDS)
            if done:
                return task.result()
            log.warning("still waiting to %s after %.0f s", what, time.monotonic() - started)
    finally:
        if not task.done():  # the start was cancelled: so is the step, not left running
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        service: ServiceSettings,
        kafka: KafkaSettings,
        database: DatabaseSettings,
        *,
        consumes: bool = True,
    ) -> None:
        """``consumes`` False: a process that only serves HTTP from the database (reporting's
        API role): no consumers, relay, producer or background work start, and readiness is the
        database's alone. What it writes to the outbox is published by a consuming replica's
        relay, which the outbox's notification wakes."""
        self.name = name
        self.consumes = consumes
        self.settings = service
        self.kafka = kafka
        self.database = database
        self.topics = TopicNames(kafka.topic_prefix)
        self.broker = make_broker(kafka, client_id=f"{kafka.client_id}-{name}")
        self.tracing = tracing.Tracing(name, tracing.provider_from_environment(name))
        self._pool: asyncpg.Pool[Any] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._relay: OutboxRelay | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._background: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._background_tasks: list[asyncio.Task[None]] = []

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._pool

    @property
    def relay(self) -> OutboxRelay:
        if self._relay is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._relay

    def background(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` beside the consumer from start until stop (e.g. capacity's replanner).
        It should handle its own transient failures; if it dies, readiness fails."""
        if not self.consumes:
            raise RuntimeError(f"{self.name} serves only: it runs no background work")
        self._background.append((name, work))

    def _died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical(
                "%s: background task %s died", self.name, task.get_name(), exc_info=task.exception()
            )

    async def dead_letter(self, record: Record, reasons: list[Reason]) -> None:
        """Dead-letter one record in its own transaction (the poison path of the runner).

        A record of the dead-letter topic itself is only logged (it is already there), so a
        consumer of that topic can never feed it in a loop."""
        topic = self.topics(Topic.DEAD_LETTERS)
        async with PostgresUnitOfWork(self.pool) as uow:
            fresh = await uow.claim([dead_letter_id(self.name, record)])
            if fresh and record.topic == topic:
                log.error("dead letter %s is unprocessable: %s", record.coordinates, reasons)
            elif fresh:
                await uow.emit(
                    [
                        dead_letter(
                            record,
                            reasons,
                            consumer=self.name,
                            topic=topic,
                            now=datetime.now(UTC),
                        )
                    ]
                )

    async def start(self) -> None:
        url = service_database_url(self.settings, self.database, f"pmo_{self.name}")
        self._pool = await _reporting_delays(
            "connect to the database",
            create_pool(
                url,
                schema=self.name,
                application_name=f"pmo-{self.name}",
                min_size=self.database.pool_min_size,
                max_size=self.database.pool_max_size,
            ),
        )
        if not self.consumes:
            log.info("%s started (serving only)", self.name)
            return
        # The relay publishes through a producer of its own (see make_producer); the broker's
        # consumers start after it, so nothing is consumed before its effects can leave.
        self._producer = make_producer(self.kafka, client_id=f"{self.kafka.client_id}-{self.name}")
        await _reporting_delays("connect the producer", self._producer.start())
        self._relay = OutboxRelay(self._pool, self.name, producer_publish(self._producer))
        # Returns once each consumer has joined its group and holds its partitions.
        await _reporting_delays(
            f"join consumer group {self.settings.group_id}", self.broker.start()
        )
        self._relay_task = asyncio.create_task(self._relay.run(), name=f"{self.name}-outbox")
        self._monitor_task = asyncio.create_task(self._monitor(), name=f"{self.name}-monitor")
        self._relay_task.add_done_callback(self._died)
        self._monitor_task.add_done_callback(self._died)
        for name, work in self._background:
            task: asyncio.Task[None] = asyncio.ensure_future(work())
            task.set_name(f"{self.name}-{name}")
            task.add_done_callback(self._died)
            self._background_tasks.append(task)
        log.info("%s started", self.name)

    async def stop(self) -> None:
        """Graceful stop, bounded by the ``shutdown_grace_seconds`` setting.

        Subscribers first: each finishes its in-flight batch (transaction, then offset commit)
        and leaves the group. Then the relay stops and gets one last pass over what was
        written, then the producer closes, then the pool. A step that fails (the broker may
        already be gone) is logged and the next step still runs: anything not published stays
        in the outbox for the next start."""
        try:
            async with asyncio.timeout(self.settings.shutdown_grace_seconds):
                if self.consumes:  # one that serves only has just its pool, closed below
                    await self._step("stop consuming", self._stop_subscribers())
                    await self._step("stop background tasks", self._cancel_tasks())
                    await self._step("flush the outbox", self._flush_outbox())
                    await self._step("close the producer", self._close_producer())
                    await self._step("close the broker", self.broker.stop())
        except TimeoutError:
            log.warning("%s: graceful stop ran out of time", self.name)
            await self._cancel_tasks()
        finally:
            if self._pool is not None:
                self._pool.terminate() if self._pool.is_closing() else await self._close_pool()
            # Spans still buffered are exported (bounded by the exporter's timeout).
            await asyncio.to_thread(self.tracing.shutdown)
        log.info("%s stopped", self.name)

    async def _step(self, what: str, step: Awaitable[Any]) -> None:
        try:
            await step
        except (OSError, KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s: could not %s: %r", self.name, what, exc)

    async def _stop_subscribers(self) -> None:
        """Every consumer stops taking batches first, so none starts one while another
        leaves; then each in turn finishes the batch it has in flight (its transaction, then
        its offsets), closes and leaves the group. In turn, not at once: two members of one
        group leaving together left one of them in the group on tansu, and the next replica's
        join waited for it past a minute. (A consumer still committing when another's leaving
        rebalances the group has its batch delivered again, and its inbox skips it.)"""
        subscribers = list(self.broker.subscribers)
        for subscriber in subscribers:
            subscriber.running = False

        async def stop(subscriber: Any) -> None:
            member = membership(subscriber)
            commits = offset_commits(subscriber)
            try:
                if commits is not None:
                    # What earlier batches noted; the batch in flight commits its own at its end.
                    await commits.close()
                await subscriber.stop()  # finishes the batch in flight, closes it
            finally:
                if member is not None and self._producer is not None:
                    await leave_first_generation(self._producer.client, member)

        for s in subscribers:
            await stop(s)

    async def _cancel_tasks(self) -> None:
        for task in (*self._background_tasks, self._monitor_task, self._relay_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _flush_outbox(self) -> None:
        if self._relay is not None and self._relay_task is not None:
            while await self._relay.relay_once():
                pass

    async def _close_producer(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # sends what it holds, waits for the acknowledgements

    async def _close_pool(self) -> None:
        assert self._pool is not None
        try:
            async with asyncio.timeout(5):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()

    async def __aenter__(self) -> ServiceRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def dead_tasks(self) -> list[str]:
        """The tasks beside the consumer (outbox relay, monitor, background work) that have
        ended while the service runs: each is meant to run until the stop, so an ended one is
        a broken process. Liveness and readiness both fail on it, so the orchestrator restarts
        the process rather than leaving it consuming without publishing."""
        tasks = (self._relay_task, self._monitor_task, *self._background_tasks)
        return [t.get_name() for t in tasks if t is not None and t.done()]

    async def ready(self) -> dict[str, bool]:
        """Readiness: the database answers and the broker answers, each within 2 s, and
        every task beside the consumer is running. A process that serves only needs the
        database."""
        checks = {"database": False}
        with contextlib.suppress(asyncpg.PostgresError, OSError, TimeoutError, RuntimeError):
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
                checks["database"] = True
        if not self.consumes:
            return checks
        checks |= {"broker": False, "tasks": not self.dead_tasks()}
        with contextlib.suppress(OSError, TimeoutError):
            checks["broker"] = await self.broker.ping(timeout=2.0)
        return checks

    async def _monitor(self) -> None:
        while True:
            try:
                backlog, oldest = await self.relay.backlog()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.debug("outbox backlog unavailable: %r", exc)  # the gauges keep their value
            else:
                metrics.OUTBOX_BACKLOG.labels(self.name).set(backlog)
                metrics.OUTBOX_OLDEST.labels(self.name).set(oldest)
            await asyncio.sleep(5)

    def http_app(self, app: FastAPI | None = None) -> FastAPI:
        """Health and metrics endpoints on ``app`` (a new one if None), and the lifecycle."""
        runtime = self

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await runtime.start()
            try:
                yield
            finally:
                await runtime.stop()

        if app is None:
            app = FastAPI(title=f"pmo {self.name}", lifespan=lifespan)
        else:
            app.router.lifespan_context = lifespan

        app.add_middleware(_Correlate, runtime=runtime)

        @app.get("/health/live", include_in_schema=False)
        async def live(response: Response) -> dict[str, Any]:
            dead = runtime.dead_tasks() if runtime._relay_task is not None else []
            if dead:
                response.status_code = 503
                return {"status": "broken", "dead_tasks": dead}
            return {"status": "ok"}

        @app.get("/health/ready", include_in_schema=False)
        async def ready(response: Response) -> dict[str, Any]:
            checks = await runtime.ready()
            ok = all(checks.values())
            response.status_code = 200 if ok else 503
            return {"status": "ok" if ok else "unavailable", "checks": checks}

        @app.get("/metrics", include_in_schema=False)
        async def prometheus() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        return app


class _Correlate:
    """Requests carry their X-Request-ID (or get one) into the logs and back, each in a span
    of its own when tracing is on (not the probes). A plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` runs every request through an extra task and stream."""

    def __init__(self, app: ASGIApp, runtime: ServiceRuntime) -> None:
        self._app = app
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        logs.correlation_id.set(request_id)
        path: str = scope["path"]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        with (
            contextlib.nullcontext()
            if path.startswith(("/health/", "/metrics"))
            else self._runtime.tracing.request(scope["method"], path, headers)
        ):
            await self._app(scope, receive, send_with_id)


def serve(app: FastAPI, host: str, port: int, *, graceful_seconds: float = 25.0) -> None:
    """Run ``app`` under uvicorn; SIGTERM and SIGINT trigger the graceful stop."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_seconds),
        # Longer than the idle timeout of the proxies and clients in front (ingress-nginx and
        # httpx keep idle connections 60 s and 5 s): with uvicorn's 5 s, a client reusing an
        # idle connection at the moment the server closes it gets a reset, not a response.
        timeout_keep_alive=75,
        lifespan="on",
        # libuv's event loop and the C HTTP parser: the consumers, the relay (asyncpg,
        # aiokafka) and the API all run on this loop (docs/dependencies.md).
        loop="uvloop",
        http="httptools",
    )
    freeze_heap()
    uvicorn.Server(config).run()


# Container objects allocated, net of those freed, between two young collections (CPython's
# default is 700). See freeze_heap.
GC_YOUNG_THRESHOLD = 50_000


def freeze_heap() -> None:
    """Take what the process has built so far out of the cyclic garbage collector's reach.

    By the time a service serves, imports, pydantic's validators and the app are hundreds of
    thousands of long-lived objects, and each of CPython's full collections walks them all:
    under load those pauses were most of the reporting API's latency tail (ranking endpoint,
    50 clients: p99 62-70 ms, against 22-26 ms with the collector off). ``gc.freeze`` moves
    them to a generation the collector never examines; the collector keeps running for
    everything allocated afterwards. What is garbage now is collected first; a frozen object
    that later becomes part of an unreachable cycle is kept until the process exits, which for
    start-up objects (modules, settings, the app) is bounded and rare.

    Young collections then wait for ``GC_YOUNG_THRESHOLD`` container objects, not 700. A
    batch keeps its records, events and rows alive while it works; at 700 the collector ran
    hundreds of times a second over them and promoted them to the older generations, whose
    collections walk everything the service holds (capacity's kept project states among it),
    and in the pipeline benchmark it took up to 29 % of a service's CPU (docs/performance.md).
    Cycles, which only the collector frees, are found later: a young one after at most that
    many allocations, one promoted before it became garbage at the next older collection.
    ``pmo_gc_collection_seconds_total`` shows what the collector costs."""
    collect_as_served()
    metrics.GC_FROZEN.set(gc.get_freeze_count())
    for generation, threshold in enumerate(gc.get_threshold()):
        metrics.GC_THRESHOLD.labels(str(generation)).set(threshold)
    if metrics.GC_TIME not in gc.callbacks:
        gc.callbacks.append(metrics.GC_TIME)


def collect_as_served() -> None:
    """The collector as a service runs it from start-up on (``freeze_heap``, which also exports
    it): what the process holds now collected and frozen, young collections every
    ``GC_YOUNG_THRESHOLD`` allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def lower_priority(nice: int | None) -> int:
    """Raise the nice value of the process, every thread it has and every thread it starts
    afterwards, to ``nice`` where it is lower, and return the value the calling thread runs
    at. None changes nothing, and no thread's value is ever lowered: that takes a privilege a
    service does not have. On Linux a nice value is a thread's: threads already running (a
    maths library starts its own when imported) are each raised, and new ones inherit the
    value of the thread that starts them."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice is None:
        return current
    for thread in _threads():
        with contextlib.suppress(ProcessLookupError):  # a thread that has ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, thread) < nice:
                os.setpriority(os.PRIO_PROCESS, thread, nice)
    return max(nice, current)


def _threads() -> list[int]:
    """The ids of this process's threads where the system lists them (Linux), else the
    process (0: the calling thread)."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except FileNotFoundError:
        return [0]


def assemble(
    name: str,
    settings: ServiceSettings,
    kafka: KafkaSettings | None,
    database: DatabaseSettings | None,
    *,
    topics: Sequence[Topic],
    handler: Callable[[ServiceRuntime], BatchHandler],
    separate: Sequence[Topic] = (),
    consumer_settings: Callable[[Sequence[Topic]], ServiceSettings] | None = None,
) -> ServiceRuntime:
    """A service's runtime with its batch handler subscribed to ``topics``.

    One consumer takes them all, except each topic in ``separate``, which gets a consumer of
    its own in the same group: its records are never fetched into a batch of the others, so
    they never wait behind one (a rescore's or a ranking's thousands of rows, say). The
    consumers run their batches concurrently, each its own transaction, as replicas of the
    service would; the group and its committed offsets are the same whatever the split.
    ``consumer_settings`` gives the settings of the consumer of the topics it is given (how
    long it waits for records, say); ``settings`` by default."""
    unknown = set(separate) - set(topics)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not among the topics {name} consumes")
    separate = list(dict.fromkeys(separate))
    runtime = ServiceRuntime(
        name, settings, kafka or KafkaSettings(), database or DatabaseSettings()
    )
    runner = BatchRunner(
        name,
        handler(runtime),
        runtime.dead_letter,
        RetryPolicy(budget_seconds=settings.retry_max_seconds),
    )
    lanes: list[tuple[str | None, list[Topic]]] = [
        (None, [t for t in topics if t not in separate]),
        *((t.value, [t]) for t in separate),
    ]
    for lane, consumed in lanes:
        if consumed:
            subscribe(
                runtime.broker,
                [runtime.topics(t) for t in consumed],
                settings=consumer_settings(consumed) if consumer_settings else settings,
                runner=runner,
                service=name,
                traces=runtime.tracing,
                lane=lane,
            )
    return runtime


def run(
    name: str,
    settings: ServiceSettings,
    build: Callable[[], ServiceRuntime],
    app: Callable[[ServiceRuntime], FastAPI] | None = None,
) -> None:
    """The console entry point of a service: logging, then serve until SIGTERM."""
    logs.configure(settings.log_level, json=settings.log_json, service=name)
    nice = lower_priority(settings.nice)
    metrics.PROCESS_NICE.labels(name).set(nice)
    if settings.nice is not None:
        log.info("runs at nice %d", nice)
    runtime = build()
    serve(app(runtime) if app else runtime.http_app(), settings.http_host, settings.http_port)
