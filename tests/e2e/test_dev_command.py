"""`pmo dev`, the README's first command, run as a user runs it: it starts everything, serves
the demo portfolio through the API, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.local import free_port
from shared.settings import DatabaseSettings
from tests.helpers import eventually, stop

pytestmark = pytest.mark.e2e


def _free_run(length: int) -> int:
    """The first of ``length`` consecutive free ports."""
    for base in range(31000, 60000, 97):
        sockets = []
        try:
            for port in range(base, base + length):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


# Above the sum of the waits below (120 + 60 + 60 s, and 40 s of cleanup), so that a slow run
# fails on the wait that ran out, with what pmo dev printed, not on a bare timeout.
@pytest.mark.timeout(300)
async def test_pmo_dev_runs_the_system_with_the_demo_and_stops_on_ctrl_c(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    http_port = _free_run(4)
    kafka_port = free_port()
    pmo = Path(sys.executable).parent / "pmo"
    process = await asyncio.create_subprocess_exec(
        str(pmo),
        "dev",
        "--kafka-port",
        str(kafka_port),
        "--http-port",
        str(http_port),
        cwd=tmp_path,
        env={**os.environ, "PMO_DATABASE_URL": database.url, "PMO_API_TOKEN": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []

    async def drain() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            output.append(line.decode(errors="replace"))

    reader = asyncio.create_task(drain())
    try:

        async def running() -> str | None:
            text = "".join(output)
            match = re.search(r"token: (\S+)", text)
            return match[1] if match and "pmo is running" in text else None

        token = await eventually(running, within=120, what="pmo dev to report it is running")

        async def demo_planned() -> list[dict[str, Any]] | None:
            async with httpx.AsyncClient() as client:
                response = await client.get(
                    f"http://127.0.0.1:{http_port}/api/v1/portfolios/retail/projects",
                    headers={"Authorization": f"Bearer {token}"},
                )
            items: list[dict[str, Any]] = response.json()["items"]
            complete = all(i["rank"] is not None or i["stage"] == "on_hold" for i in items)
            planned = all(i["plan_status"] for i in items)
            return items if len(items) == 8 and complete and planned else None

        items = await eventually(demo_planned, within=60, what="the demo portfolio planned")
        assert items[0]["mandatory"] is True  # the regulatory project ranks first

        # Operators' view: metrics on every service.
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{http_port + 1}/metrics")).text
        assert "pmo_consumer_lag{" in metrics
        assert "faststream_received_messages_total{" in metrics
        assert 'pmo_outbox_backlog{service="intake"}' in metrics
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"{exc!r}; pmo dev printed:\n{''.join(output)[-4000:]}") from None
    finally:
        if process.returncode is None:
            # Ctrl-C first: it stops the services and the broker it started (each in a session
            # of its own), which a kill of pmo dev alone would leave running.
            await stop(process, signal.SIGINT, 30)
        # The children hold the pipe too; do not wait for an end of file that may not come.
        try:
            await asyncio.wait_for(reader, 10)
        except TimeoutError:
            reader.cancel()
    text = "".join(output)
    assert "stopping" in text
    for service in ("intake", "scoring", "capacity", "reporting"):
        assert f"{service} stopped" in text, text[-3000:]
