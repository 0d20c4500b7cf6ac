"""SIGTERM mid-stream, against the real broker and Postgres: the service answers its health
probes, stops within its grace period, and after a restart every submission has exactly one
effect."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.local import free_port
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic, TopicNames
from tests.helpers import committed, eventually, publish_json, submission

pytestmark = pytest.mark.integration

GRACE = 20
NICE = 3  # the CPU priority it runs at, which every thread of it keeps


async def start(
    database: DatabaseSettings, kafka: KafkaSettings, port: int, log: Path
) -> asyncio.subprocess.Process:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.intake",
            env={
                **os.environ,
                "PMO_DATABASE_URL": database.url,
                "PMO_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "PMO_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "PMO_INTAKE_HTTP_PORT": str(port),
                "PMO_INTAKE_MAX_RECORDS": "50",
                "PMO_INTAKE_SHUTDOWN_GRACE_SECONDS": str(GRACE),
                "PMO_INTAKE_NICE": str(NICE),
                # No commit falls due while it runs: what is committed is what the stop did.
                "PMO_INTAKE_COMMIT_INTERVAL_MS": str(600_000),
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=handle,
        )
    try:
        await _started_as_promised(process, port)
    except BaseException:
        process.kill()  # a check failed: no process is left behind to load the machine
        await process.wait()
        raise
    return process


async def _started_as_promised(process: asyncio.subprocess.Process, port: int) -> None:
    async def ready() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                live = await client.get(f"http://127.0.0.1:{port}/health/live")
                response = await client.get(f"http://127.0.0.1:{port}/health/ready")
        except httpx.TransportError:
            return False
        return (
            live.status_code == 200
            and response.status_code == 200
            and response.json()
            == {
                "status": "ok",
                "checks": {"database": True, "broker": True, "tasks": True},
            }
        )

    await eventually(ready, within=60, what="intake ready")
    async with httpx.AsyncClient() as client:
        exposed = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    # What start-up built is out of the collector's reach, and young collections wait for
    # many more allocations than CPython's default (shared/runtime.py freeze_heap).
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in exposed.splitlines()
        if line.startswith("pmo_gc_")
    }
    assert samples["pmo_gc_frozen_objects"] > 10_000
    assert samples['pmo_gc_threshold{generation="0"}'] == 50_000
    assert samples['pmo_gc_threshold{generation="2"}'] == 10
    assert 'pmo_gc_collection_seconds_total{generation="0"}' in samples
    assert f'pmo_process_nice{{service="intake"}} {NICE}.0' in exposed
    threads = await asyncio.to_thread(os.listdir, f"/proc/{process.pid}/task")
    assert len(threads) > 1  # the default executor's, at least (DNS lookups for the broker)
    assert {os.getpriority(os.PRIO_PROCESS, int(t)) for t in threads} == {NICE}


@pytest.mark.timeout(240)
async def test_sigterm_mid_stream_loses_nothing_and_duplicates_nothing(
    database: DatabaseSettings, kafka: KafkaSettings, tmp_path: Path
) -> None:
    await migrate(database.url, [service_component("intake")])
    port = free_port()
    log = tmp_path / "intake.log"
    conn = await asyncpg.connect(database.url)
    process: asyncio.subprocess.Process | None = None
    try:
        process = await start(database, kafka, port, log)
        messages = [submission(f"S{i:05d}") for i in range(3000)]
        topic = TopicNames(kafka.topic_prefix)(Topic.SUBMISSIONS)
        await publish_json(kafka.bootstrap_servers, topic, messages)

        async def logged(at_least: int) -> int | None:
            n = int(await conn.fetchval("SELECT count(*) FROM intake.submission_log"))
            return n if n >= at_least else None

        await eventually(lambda: logged(1), what="processing to start")
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), GRACE + 10)
        took = time.monotonic() - stopping
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert code in (0, -signal.SIGTERM)
        assert took < GRACE + 5, f"stopped in {took:.1f}s"
        assert '"message": "intake stopped"' in log.read_text(), "the graceful stop completed"
        at_stop = int(await conn.fetchval("SELECT count(*) FROM intake.submission_log"))
        # The stop committed the offsets of every batch it had done, and no further: the next
        # start takes up where it stopped (no record is delivered twice).
        offsets = await committed(kafka.bootstrap_servers, "pmo-intake", topic)

        process = await start(database, kafka, port, log)
        total = await eventually(lambda: logged(3000), within=120, what="all 3000 handled")
        distinct = await conn.fetchval(
            "SELECT count(DISTINCT submission_id) FROM intake.submission_log"
        )
        projects = await conn.fetchval("SELECT count(*) FROM intake.projects")
    finally:
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), GRACE + 10)
        await conn.close()
    assert 0 < at_stop <= 3000
    assert sum(max(0, offset) for offset in offsets.values()) == at_stop, (offsets, at_stop)
    assert (total, distinct, projects) == (3000, 3000, 3000)
