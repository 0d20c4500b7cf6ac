"""The latency floor of a submission's path: what the freshness row's two durable hops cost in
time on this machine, at the freshness row's rate, with no domain work at all.

A submission reaches the API through two services: intake consumes it, makes it durable and
publishes a project; reporting consumes that and makes it durable where the API reads it. Here
two hand-written processes do exactly that and nothing else (plain aiokafka and asyncpg, as in
bench/floor.py): a *hop* consumes the submissions, commits its inbox, state and outbox rows in
one transaction, produces the batch, waits for the acknowledgement and clears its outbox rows;
a *sink* consumes the hop's records and commits its inbox and state rows. Both use the
services' consumer settings (batch wait, fetch wait, batch size) and loop (a batch fetched when
the loop asks for it, ``shared.consumer.next_batch``) and commit offsets at the
services' commit interval; their tables and statements are bench/floor.py's. The load
generator is the freshness row's (the same encoded submissions, producer and pace, the same
sample), and an observer polls the sink's state in Postgres every 10 ms for the sampled
submissions, without the API's request.

Publish → visible here is the least the freshness row can measure at that rate with these
guarantees, this broker and these cores: every service does all of this and its domain work
besides, beside the derived work. Run as a module, it is one loop's process:
``python -m bench.path_floor hop|sink BOOTSTRAP URL SCHEMA SOURCE [TARGET]``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
import zlib
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bench.cpu import CpuMeter, broker_pids, postgres_pids, quarter_rates
from bench.floor import BATCH, BATCH_TIMEOUT_MS, SCHEMA, statements
from bench.freshness import LINGER_MS, Latency, _latency, quarter_medians, sample_stride
from bench.harness import encoded_submissions, paced
from bench.pipeline import per_submission_ms
from bench.relay import hand_clients, topics
from shared.consumer import next_batch
from shared.settings import ServiceSettings

# How often the observer looks for the sampled submissions in the sink's state. (The freshness
# row's observer no longer polls: the API's long poll answers it, docs/performance.md.)
POLL_SECONDS = 0.010
COMMIT_INTERVAL_S = ServiceSettings.model_fields["commit_interval_ms"].default / 1000

_VISIBLE = "SELECT key FROM {s}.state WHERE key = ANY($1::text[])"


async def loop(bootstrap: str, url: str, schema: str, source: str, target: str | None) -> None:
    """One loop, until SIGTERM: a hop when it has a ``target``, a sink otherwise."""
    sql = statements(schema)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    conn = await asyncpg.connect(url)
    consumer, producer = await hand_clients(
        bootstrap, source, group=f"{schema}-{'hop' if target else 'sink'}"
    )
    pending: dict[TopicPartition, OffsetAndMetadata] = {}
    committed_at = time.monotonic()
    try:
        while not stopping.is_set():
            batches = await next_batch(consumer, timeout_ms=BATCH_TIMEOUT_MS, max_records=BATCH)
            records = [r for rs in batches.values() for r in rs]
            if records:
                latest = {r.key.decode(): r.value for r in records}
                async with conn.transaction():
                    await conn.execute(
                        sql["inbox"], [f"{r.topic}/{r.partition}/{r.offset}" for r in records]
                    )
                    await conn.execute(sql["state"], list(latest), list(latest.values()))
                    if target is not None:
                        rows = await conn.fetch(
                            sql["outbox"], [r.key for r in records], [r.value for r in records]
                        )
                if target is not None:
                    await _publish(producer, target, records)
                    await conn.execute(sql["clear"], [row[0] for row in rows])
                for tp, rs in batches.items():
                    pending[tp] = OffsetAndMetadata(rs[-1].offset + 1, "")
            if pending and time.monotonic() - committed_at >= COMMIT_INTERVAL_S:
                await consumer.commit(pending)
                pending, committed_at = {}, time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()
        await conn.close()


async def _publish(producer: AIOKafkaProducer, topic: str, records: list) -> None:  # type: ignore[type-arg]
    """The batch's records as one closed batch per partition (as the services' relay sends
    them), acknowledged."""
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list] = {}  # type: ignore[type-arg]
    for r in records:
        by_partition.setdefault(partitions[zlib.crc32(r.key) % len(partitions)], []).append(r)
    sent = []
    for partition, rs in by_partition.items():
        batch = producer.create_batch()
        for r in rs:
            if batch.append(key=r.key, value=r.value, timestamp=None) is None:
                raise RuntimeError("a consumed batch does not fit in one produce batch")
        batch.close()
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*sent)


@dataclass(frozen=True, slots=True)
class PathFloor:
    latency: Latency
    # The p50 of the submissions published in each quarter of the row, as the freshness row's:
    # what builds up as the row writes with no domain work (the broker's stored batches).
    quarters: tuple[float, ...]
    broker_quarters: tuple[float, ...]  # the broker's CPU in each quarter, ms a second
    achieved_per_second: float
    cpu_ms: dict[str, float]  # per submission, by process group
    waits: dict[str, float]  # seconds waited for a core a second run, by process group
    machine_busy: float


async def path_floor(bootstrap: str, url: str, rate: float, seconds: float = 20.0) -> PathFloor:
    """Publish submissions at ``rate`` a second for ``seconds`` through a hop and a sink, and
    take each sampled one's time to visible in the sink's state."""
    tag = uuid.uuid4().hex[:8]
    schema, source, middle = f"bench_path_{tag}", f"bench-path-in-{tag}", f"bench-path-mid-{tag}"
    await topics(bootstrap, source, middle)
    conn = await asyncpg.connect(url)
    loops: list[asyncio.subprocess.Process] = []
    try:
        await conn.execute(SCHEMA.format(s=schema))
        database = await conn.fetchval("SELECT current_database()")
        for role_args in ((source, middle), (middle,)):
            loops.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.path_floor", bootstrap, url, schema, *role_args
                )
            )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
        await producer.start()
        try:
            visible = _VISIBLE.format(s=schema)
            # Both groups have joined once a first record has gone all the way through.
            await producer.send_and_wait(source, b"warm-up", key=b"warm-up")
            for _ in range(1200):  # a minute
                if await conn.fetch(visible, ["warm-up"]):
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the hop and the sink did not pass a first record on")
            count = max(2, int(rate * seconds))
            encoded = encoded_submissions(count)
            stride = sample_stride(rate)
            published: dict[str, float] = {}
            taken: list[tuple[float, float]] = []  # (published at, latency)
            expected = len(range(0, count, stride))

            async def observe() -> None:
                while len(taken) < expected:
                    if published:
                        rows = await conn.fetch(visible, list(published))
                        now = time.perf_counter()
                        for row in rows:
                            sent = published.pop(row["key"])
                            taken.append((sent, now - sent))
                    await asyncio.sleep(POLL_SECONDS)

            async def send(i: int) -> None:
                sent = encoded[i]
                if i % stride == 0:
                    published[sent.key.decode()] = time.perf_counter()
                await producer.send(source, sent.value, key=sent.key)

            meter = CpuMeter(
                {
                    "hop": lambda: [loops[0].pid],
                    "sink": lambda: [loops[1].pid],
                    "broker": lambda: broker_pids(bootstrap),
                    "postgres": lambda: postgres_pids(database),
                    "load generator": lambda: [os.getpid()],
                }
            )
            watching = asyncio.create_task(observe())
            meter.start()
            started = time.perf_counter()
            broker = asyncio.create_task(
                quarter_rates(lambda: broker_pids(bootstrap), count / rate)
            )
            achieved = await paced(rate, count, send)
            async with asyncio.timeout(120):
                await watching
            broker_quarters = await broker
            use = meter.stop()
        finally:
            await producer.stop()
    finally:
        for process in loops:
            if process.returncode is None:
                process.terminate()
        for process in loops:
            await process.wait()
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
    return PathFloor(
        latency=_latency([latency for _, latency in taken]),
        quarters=quarter_medians(taken, started, seconds),
        broker_quarters=broker_quarters,
        achieved_per_second=achieved,
        cpu_ms=per_submission_ms(use, count),
        waits={group: use.wait_per_cpu_second(group) for group in use.seconds},
        machine_busy=use.machine_busy,
    )


if __name__ == "__main__":
    bootstrap_, url_, schema_, source_, *target_ = sys.argv[1:]
    asyncio.run(loop(bootstrap_, url_, schema_, source_, target_[0] if target_ else None))
