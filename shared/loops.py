"""The loop of a service's background worker (capacity's replanner, scoring's rank settler,
reporting's warehouse feed): do a pass, again at once while work is waiting, and classify
failures as every consumer does."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.errors import is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")


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


class Isolation:
    """Runs a worker's pass over many names (portfolios) so that an unexpected failure of one
    does not stop the others: the error is logged with its traceback, ``on_failure`` is called
    (a metric), and the name is skipped for ``retry_after`` seconds. Transient failures
    propagate, to back off the whole pass (``keep_running``)."""

    def __init__(
        self,
        what: str,
        *,
        retry_after: float = 30.0,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._what = what
        self._retry_after = retry_after
        self._on_failure = on_failure
        self._until: dict[str, float] = {}  # failed names, and when to try them again

    async def run(self, name: str, work: Callable[[], Awaitable[int]]) -> int:
        """``work()``'s count for ``name``, or 0 if it failed or is waiting to be retried."""
        return await self.attempt(name, work, 0)

    async def attempt(self, name: str, work: Callable[[], Awaitable[T]], failed: T) -> T:
        """``work()``'s result for ``name``, or ``failed`` if it failed or is waiting to be
        retried."""
        if self._until.get(name, 0.0) > time.monotonic():
            return failed
        try:
            done = await work()
        except Exception as exc:  # classified: transient ones propagate
            if is_transient(exc):
                raise
            if self._on_failure is not None:
                self._on_failure()
            log.exception("%s %s failed; retrying in %g s", self._what, name, self._retry_after)
            self._until[name] = time.monotonic() + self._retry_after
            return failed
        self._until.pop(name, None)
        return done
