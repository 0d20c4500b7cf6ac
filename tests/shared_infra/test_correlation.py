"""Log lines carry the correlation id of what is being worked on; HTTP requests keep theirs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from shared import logs
from shared.runtime import ServiceRuntime
from shared.settings import DatabaseSettings, KafkaSettings, ServiceSettings


def test_json_log_lines_carry_the_correlation_id(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", json=True, service="intake")
        token = logs.correlation_id.set("pmo.intake.submissions.v1/3/40-89 intake:abc")
        logging.getLogger("pmo.test").info("applied %d submissions", 50)
        logs.correlation_id.reset(token)
        logging.getLogger("pmo.test").info("idle")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines()[-2:])
    assert first["message"] == "applied 50 submissions"
    assert first["service"] == "intake"
    assert first["correlation_id"] == "pmo.intake.submissions.v1/3/40-89 intake:abc"
    assert second["correlation_id"] is None


async def test_http_requests_keep_or_get_a_request_id() -> None:
    runtime = ServiceRuntime("intake", ServiceSettings(), KafkaSettings(), DatabaseSettings())
    app = runtime.http_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        given = await c.get("/health/live", headers={"X-Request-ID": "req-42"})
        fresh = await c.get("/health/live")
    assert given.headers["x-request-id"] == "req-42"
    assert len(fresh.headers["x-request-id"]) == 32
