"""A service as its own process, as it runs in production: its console entry point, settings
from the environment, readiness from its health endpoint, memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.local import free_port
from shared.settings import DatabaseSettings, KafkaSettings
from tests.helpers import eventually, stop


@dataclass
class ServiceProcess:
    service: str
    process: asyncio.subprocess.Process
    url: str
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def memory_kib(self, field: str = "VmHWM") -> int:
        """A figure of /proc/<pid>/status: VmHWM is the peak resident set, VmRSS the current."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for {self.service}")


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{url}/health/ready")
    except httpx.TransportError:
        return False
    return response.status_code == 200


@contextlib.asynccontextmanager
async def service_process(
    service: str,
    database: DatabaseSettings,
    kafka: KafkaSettings,
    log_dir: Path,
    **env: str,
) -> AsyncIterator[ServiceProcess]:
    """``python -m services.<service>`` on a free port; stopped with SIGTERM on exit."""
    port = free_port()
    prefix = f"PMO_{service.upper()}_"
    log = log_dir / f"{service}.log"
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{service}",
            env={
                **os.environ,
                "PMO_DATABASE_URL": database.url,
                "PMO_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "PMO_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                f"{prefix}HTTP_PORT": str(port),
                **env,
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=handle,
        )
    running = ServiceProcess(service, process, f"http://127.0.0.1:{port}", log)
    try:

        async def ready() -> bool:
            if not running.alive:
                raise AssertionError(f"{service} exited: {log.read_text()[-3000:]}")
            return await _ready(running.url)

        await eventually(ready, within=60, what=f"{service} ready")
        yield running
    finally:
        if running.alive:
            await stop(process, signal.SIGTERM, 30)
