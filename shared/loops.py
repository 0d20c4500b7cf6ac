"""The loop of a service's background worker (capacity's replanner, scoring's rank settler,
reporting's warehouse feed): do a pass, again at once while work is waiting, and classify
failures as every consumer does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.errors import is_transient

log = logging.getLogger(__name__)


async def keep_running(
    name: str,
    step: Callable[[], Awaitable[bool]],
    idle: Callable[[], Awaitable[None]],
) -> None:
    """Run ``step`` until cancelled: at once again when it returns True (work is waiting), after
    ``idle()`` otherwise. A transient failure backs off (50 ms, doubling to 5 s) and retries;
    any other failure propagates and ends the worker, which fails readiness."""
    backoff = 0.05
    while True:
        try:
            more = await step()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s: transient failure, retrying", name, exc_info=exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        backoff = 0.05
        if not more:
            await idle()
