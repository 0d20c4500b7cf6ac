"""The pipeline row of ``make bench``: submissions per second from the inbound topic to
committed rows in reporting's read model, through the four services running as separate
processes, with each service's peak memory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaProducer

from shared.admin import ensure_topics
from shared.local import free_port
from shared.migrations import SERVICES, migrate, service_component
from shared.settings import KafkaSettings
from shared.topics import Topic, TopicNames


@dataclass(frozen=True, slots=True)
class PipelineResult:
    per_second: float
    events_per_second: float  # records applied by all four services together
    peak_rss_mb: dict[str, float]


def _submission(i: int) -> dict[str, object]:
    return {
        "submission_id": str(uuid.uuid4()),
        "portfolio": f"bench{i % 8}",
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


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def pipeline(bootstrap: str, server_url: str, submissions: int = 20_000) -> PipelineResult:
    name = f"pmo_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    await ensure_topics(kafka)
    await migrate(url, [service_component(s) for s in SERVICES])
    env = {
        **os.environ,
        "PMO_DATABASE_URL": url,
        "PMO_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PMO_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "PMO_API_TOKEN": "bench-token-000000",
        "PMO_CAPACITY_PLAN_START": "2027-01",
    }
    for service in SERVICES:
        env[f"PMO_{service.upper()}_HTTP_PORT"] = str(free_port())
        env[f"PMO_{service.upper()}_LOG_LEVEL"] = "WARNING"
    processes = {
        s: await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{s}",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for s in SERVICES
    }
    conn = await asyncpg.connect(url)
    try:
        await asyncio.sleep(8)  # consumer groups settle before the clock starts
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        topic = TopicNames(kafka.topic_prefix)(Topic.SUBMISSIONS)
        started = time.perf_counter()
        futures = []
        for i in range(submissions):
            message = _submission(i)
            key = f"{message['portfolio']}/bench/{message['external_id']}".encode()
            futures.append(await producer.send(topic, json.dumps(message).encode(), key=key))
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
        peaks = {s: _peak_rss_mb(p.pid) for s, p in processes.items()}
        return PipelineResult(submissions / elapsed, applied / elapsed, peaks)
    finally:
        await conn.close()
        for p in processes.values():
            p.send_signal(signal.SIGTERM)
        for p in processes.values():
            await p.wait()
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
