"""The pipeline row of ``make bench``: submissions per second from the inbound topic to
committed rows in reporting's read model, through the four services running as separate
processes, with each service's peak memory."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.harness import service_stack, submission, submission_key
from shared.migrations import SERVICES
from shared.topics import Topic


@dataclass(frozen=True, slots=True)
class PipelineResult:
    per_second: float
    events_per_second: float  # records applied by all four services together
    peak_rss_mb: dict[str, float]


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def pipeline(bootstrap: str, server_url: str, submissions: int = 20_000) -> PipelineResult:
    async with service_stack(bootstrap, server_url) as stack:
        conn = await asyncpg.connect(stack.url)
        try:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
            await producer.start()
            topic = stack.topics(Topic.SUBMISSIONS)
            started = time.perf_counter()
            futures = []
            for i in range(submissions):
                message = submission(i)
                value = json.dumps(message).encode()
                futures.append(await producer.send(topic, value, key=submission_key(message)))
            await asyncio.gather(*futures)
            await producer.stop()
            while True:
                done = await conn.fetchval(
                    "SELECT count(*) FROM reporting.projects"
                    " WHERE revision IS NOT NULL AND rank IS NOT NULL AND plan_status IS NOT NULL"
                )
                if done >= submissions:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - started
            applied = 0
            for s in SERVICES:
                applied += await conn.fetchval(f"SELECT count(*) FROM {s}.inbox")
            peaks = {s: _peak_rss_mb(p.pid) for s, p in stack.processes.items()}
            return PipelineResult(submissions / elapsed, applied / elapsed, peaks)
        finally:
            await conn.close()
