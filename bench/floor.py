"""The durable minimum: what the pipeline's guarantees cost on this machine with no domain work
at all, measured in the same run as the pipeline row, and the ceiling that puts on its rate.

Every event a service applies is consumed from the broker and made durable with its inbox
record and its state change in one transaction, offsets committed after; every event a service
publishes is first an outbox row in that transaction, then a produced record, then cleared
(docs/guarantees.md). Two hand-written loops do exactly that and nothing else: plain aiokafka
and asyncpg, no framework, no validation, no JSON, one statement per table per batch, the
largest batches the services take (``max_records``) over a pre-filled topic, a minimal schema
(an inbox key, a state row keyed by entity, an outbox row without headers or timestamps).

- a *hop* consumes an event and publishes one: inbox, state and outbox rows in one
  transaction, then the batch produced and acknowledged, its outbox rows deleted, the offsets
  committed;
- a *sink* consumes an event and publishes nothing: inbox and state rows, then the offsets.

Their CPU per event (this process, the broker and Postgres) times the pipeline's own counts
(records published and events applied per submission, measured in the pipeline row) is the
least CPU a submission can cost through four services with these guarantees, and two cores
divided by it is the most submissions per second any implementation of them reaches here.
It is a floor, not an estimate: the services do all of this and their domain work besides."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass

import asyncpg

from bench.cpu import CpuMeter, broker_pids, postgres_pids
from bench.relay import fill, hand_clients, topics
from shared.settings import ServiceSettings

_SETTINGS = ServiceSettings.model_fields
BATCH = _SETTINGS["max_records"].default
BATCH_TIMEOUT_MS = _SETTINGS["batch_timeout_ms"].default
ENTITIES = 10_000  # state rows the events update (a portfolio's projects, say)

SCHEMA = """
CREATE SCHEMA {s};
CREATE TABLE {s}.inbox (event_id text PRIMARY KEY);
CREATE TABLE {s}.state (key text PRIMARY KEY, value bytea NOT NULL, version int NOT NULL);
CREATE TABLE {s}.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key bytea, value bytea NOT NULL
);
"""
_INBOX = "INSERT INTO {s}.inbox SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING event_id"
_STATE = (
    "INSERT INTO {s}.state (key, value, version)"
    " SELECT k, v, 1 FROM unnest($1::text[], $2::bytea[]) AS t (k, v)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = state.version + 1"
)
_OUTBOX = (
    "INSERT INTO {s}.outbox (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])"
    " RETURNING id"
)
_CLEAR = "DELETE FROM {s}.outbox WHERE id = ANY($1::bigint[])"


def statements(schema: str) -> dict[str, str]:
    """A durable loop's statements on ``schema``'s tables (``SCHEMA``): the inbox claim, the
    state upsert, the outbox insert and its clearing."""
    return {
        name: text.format(s=schema)
        for name, text in (
            ("inbox", _INBOX),
            ("state", _STATE),
            ("outbox", _OUTBOX),
            ("clear", _CLEAR),
        )
    }


@dataclass(frozen=True, slots=True)
class FloorResult:
    per_second: float  # events through the loop, wall clock
    cpu_ms: float  # CPU per event: this process, the broker and Postgres together
    cpu_by_group: dict[str, float]  # the same, per group (ms per event)
    events_per_commit: float


async def durable_loop(
    bootstrap: str, url: str, source: str, messages: int, *, publish: bool
) -> FloorResult:
    """Consume ``messages`` events from ``source`` and apply each durably: a hop if
    ``publish``, a sink otherwise (see the module's docstring)."""
    schema = f"bench_floor_{uuid.uuid4().hex[:8]}"
    sql = statements(schema)
    target = f"bench-floor-out-{uuid.uuid4().hex[:8]}"
    if publish:
        await topics(bootstrap, target)
    async with contextlib.AsyncExitStack() as cleanup:
        conn = await asyncpg.connect(url)
        cleanup.push_async_callback(conn.close)
        await conn.execute(SCHEMA.format(s=schema))
        cleanup.push_async_callback(conn.execute, f"DROP SCHEMA {schema} CASCADE")
        consumer, producer = await hand_clients(
            bootstrap, source, group=f"bench-floor-{uuid.uuid4().hex[:8]}"
        )
        cleanup.push_async_callback(producer.stop)
        cleanup.push_async_callback(consumer.stop)
        database = await conn.fetchval("SELECT current_database()")
        meter = CpuMeter(
            {
                "client": lambda: [os.getpid()],
                "broker": lambda: broker_pids(bootstrap),
                "postgres": lambda: postgres_pids(database),
            }
        )
        done = measured = commits = 0
        started: float | None = None
        async with asyncio.timeout(300):
            while done < messages:
                batches = await consumer.getmany(timeout_ms=BATCH_TIMEOUT_MS, max_records=BATCH)
                records = [r for rs in batches.values() for r in rs]
                if not records:
                    continue
                ids = [f"{r.topic}/{r.partition}/{r.offset}" for r in records]
                latest: dict[str, bytes] = {}
                for r in records:
                    assert r.key is not None
                    assert r.value is not None
                    latest[r.key.decode()] = r.value
                async with conn.transaction():
                    if len(await conn.fetch(sql["inbox"], ids)) != len(ids):
                        raise RuntimeError("a pre-filled topic holds each event once")
                    await conn.execute(sql["state"], list(latest), list(latest.values()))
                    if publish:
                        keys = [r.key for r in records]
                        values = [r.value for r in records]
                        outbox = [row[0] for row in await conn.fetch(sql["outbox"], keys, values)]
                transactions = 1
                if publish:
                    batch = producer.create_batch()
                    for r in records:
                        if batch.append(key=r.key, value=r.value, timestamp=None) is None:
                            raise RuntimeError("a consumed batch does not fit in one produce batch")
                    await (await producer.send_batch(batch, target, partition=None))
                    await conn.execute(sql["clear"], outbox)
                    transactions += 1
                await consumer.commit()
                done += len(records)
                if started is None:
                    # The first batch warms up (the group's join, the first fetch, prepared
                    # statements); the loop is measured from its end.
                    meter.start()
                    started = time.perf_counter()
                else:
                    measured += len(records)
                    commits += transactions
        if started is None or not measured:
            raise RuntimeError(f"{messages} events make one batch: too few to measure a loop")
        elapsed = time.perf_counter() - started
        use = meter.stop()
    return FloorResult(
        per_second=measured / elapsed,
        cpu_ms=use.total * 1000 / measured,
        cpu_by_group={k: v * 1000 / measured for k, v in use.seconds.items()},
        events_per_commit=measured / commits,
    )


async def durable_minimum(
    bootstrap: str, url: str, messages: int, payload: int
) -> tuple[FloorResult, FloorResult]:
    """The hop and the sink over one pre-filled topic of ``messages`` events keyed by
    ``ENTITIES`` entities."""
    source = await fill(bootstrap, messages, payload, keys=ENTITIES)
    hop = await durable_loop(bootstrap, url, source, messages, publish=True)
    sink = await durable_loop(bootstrap, url, source, messages, publish=False)
    return hop, sink


def floor_per_submission(hop_ms: float, sink_ms: float, published: float, applied: float) -> float:
    """The least CPU (ms) one submission can cost: each record applied is charged a sink's work
    (consumed, made durable with its inbox row), each record published what a hop adds to it
    (the outbox row, the produce, the clearing). With a record out for every record in, that
    is a hop per record published and a sink per further record applied; records published
    beyond those applied (reporting's warehouse records, which no service reads) are charged
    the publishing alone."""
    return applied * sink_ms + published * (hop_ms - sink_ms)
