"""``pmo dev``: the whole system on one machine with embedded infrastructure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console

from shared.admin import ensure_topics
from shared.cli.demo import load_demo
from shared.local import DERIVED, DERIVED_NICE, embedded_postgres, tansu
from shared.migrations import SERVICES, migrate, service_component
from shared.settings import KafkaSettings

SERVICES_BY_PORT_OFFSET = ("reporting", "intake", "scoring", "capacity")


def _wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"service on port {port} not ready after {timeout}s")
        time.sleep(0.2)


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def run_dev(*, kafka_port: int, http_port: int, demo: bool, console: Console) -> int:
    ports = {s: http_port + i for i, s in enumerate(SERVICES_BY_PORT_OFFSET)}
    state = Path(".pmo")
    state.mkdir(exist_ok=True)
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with contextlib.ExitStack() as stack:
        url = os.environ.get("PMO_DATABASE_URL")
        if url:
            console.print(f"postgres: {url} (PMO_DATABASE_URL)")
        else:
            data = state.resolve() / "pgdata"
            # As root the embedded server runs as its own system user and must reach its data.
            os.chmod(state, 0o755)  # noqa: S103
            url = stack.enter_context(embedded_postgres(data))
            console.print(f"postgres: embedded, data in {data}")
        bootstrap = stack.enter_context(tansu(kafka_port, log=state / "tansu.log"))
        console.print(f"kafka:    tansu on {bootstrap} (memory only)")
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        asyncio.run(ensure_topics(kafka))
        applied = asyncio.run(migrate(url, [service_component(s) for s in SERVICES]))
        console.print(f"migrations: {len(applied)} applied")
        token = os.environ.get("PMO_API_TOKEN") or secrets.token_urlsafe(24)
        env = {
            **os.environ,
            "PMO_DATABASE_URL": url,
            "PMO_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PMO_API_TOKEN": token,
        }
        for service, port in ports.items():
            env[f"PMO_{service.upper()}_HTTP_PORT"] = str(port)
            env.setdefault(f"PMO_{service.upper()}_LOG_JSON", "false")
        for service in DERIVED:  # docs/operations.md, "CPU weights"
            env.setdefault(f"PMO_{service.upper()}_NICE", str(DERIVED_NICE))
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for service in ports:
                processes[service] = subprocess.Popen(  # noqa: S603 - our own modules
                    [sys.executable, "-m", f"services.{service}"], env=env, start_new_session=True
                )
            for service, port in ports.items():
                _wait_ready(port)
                console.print(f"{service:9s} ready on http://127.0.0.1:{port}")
            if demo:
                count = asyncio.run(load_demo(kafka))
                console.print(f"demo: {count} messages published to the inbound topics")
            console.print(
                "\n[bold]pmo is running.[/bold]\n"
                f"  API:   http://127.0.0.1:{http_port}/api/v1/portfolios/retail/projects\n"
                f"  token: {token}\n"
                f"  try:   curl -H 'Authorization: Bearer {token}' "
                f"http://127.0.0.1:{http_port}/api/v1/portfolios/retail/projects\n"
                "Ctrl-C stops everything."
            )
            while not stop.requested:
                for service, process in processes.items():
                    if process.poll() is not None:
                        console.print(f"[red]{service} exited with {process.returncode}[/red]")
                        return 1
                time.sleep(0.5)
            console.print("stopping…")
            return 0
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
