"""The history's retention: reporting keeps its history for a window, not forever.

Every change of a project, every rank move and every plan summary is kept so that the API's
``as_of`` and BI's history views can read any past instant (docs/reporting.md). A busy
portfolio's history grows by hundreds of megabytes a day, most of it rank moves. With
``PMO_REPORTING_HISTORY_RETENTION_DAYS`` set, a worker sweeps the history every
``PMO_REPORTING_HISTORY_SWEEP_INTERVAL_SECONDS`` and deletes what no instant within the window
reads (``HistoryPurge``): an instant in the window reads the same before and after a sweep, and
the API refuses an instant before the window rather than answer from a partial history.

A sweep goes through the projects by key, a few hundred at a time, and deletes their rows a
bounded number a transaction, so that it never holds many rows' locks or one long transaction
beside the consumers; then the plan summaries, likewise. Its deletes are idempotent: a sweep
interrupted (a stop, a transient failure) is simply run again, and two workers sweeping at once
delete each row once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.reporting.repository import HistoryPurge
from shared import metrics
from shared.errors import is_transient
from shared.loops import keep_running

log = logging.getLogger(__name__)

# Projects a sweep goes through at a time, and rows of each table a transaction of it deletes
# at most: a first sweep over years of a busy portfolio's rank moves is many transactions.
PROJECTS = 500
ROWS = 10_000
# How much earlier than the window's start a sweep's cutoff is: the clocks of the hosts that
# sweep and answer ``as_of`` may differ by as much.
SKEW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep deleted."""

    versions: int = 0
    moves: int = 0
    summaries: int = 0


class HistoryRetention:
    """Sweeps the history of ``pool()``'s schema for what ``retention`` lets go."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool[Any]],
        retention: timedelta,
        clock: Callable[[], datetime],
        *,
        interval: float,
        projects: int = PROJECTS,
        rows: int = ROWS,
    ) -> None:
        self._pool = pool
        self._retention = retention
        self._clock = clock
        self._interval = interval
        self._projects = projects
        self._rows = rows

    def cutoff(self) -> datetime:
        """The earliest instant kept: everything from it on reads as it did. A minute before
        the window's start (``SKEW``), so that an API host whose clock runs behind this one's
        by less never answers an instant the sweep has already let go."""
        return self._clock() - self._retention - SKEW

    async def sweep(self) -> Swept:
        """Delete, from the whole history, what no instant from now's cutoff on reads."""
        cutoff = self.cutoff()
        versions = moves = summaries = 0
        after = ""
        while True:
            async with self._pool().acquire() as conn:
                keys = await HistoryPurge(conn).project_keys(after, self._projects)
            if not keys:
                break
            while True:  # these projects' rows, at most ``rows`` of each table a transaction
                async with self._pool().acquire() as conn, conn.transaction():
                    done = await HistoryPurge(conn).projects(keys, cutoff, self._rows)
                versions += done[0]
                moves += done[1]
                metrics.HISTORY_PURGED.labels("projects_history").inc(done[0])
                metrics.HISTORY_PURGED.labels("rank_history").inc(done[1])
                await asyncio.sleep(0)  # the consumers' turn between transactions
                if max(done) < self._rows:
                    break
            after = keys[-1]
        async with self._pool().acquire() as conn:
            portfolios = await HistoryPurge(conn).portfolios()
        for portfolio in portfolios:
            while True:
                async with self._pool().acquire() as conn:
                    deleted = await HistoryPurge(conn).summaries(portfolio, cutoff, self._rows)
                summaries += deleted
                metrics.HISTORY_PURGED.labels("plan_summaries").inc(deleted)
                await asyncio.sleep(0)
                if deleted < self._rows:
                    break
        swept = Swept(versions, moves, summaries)
        log.info(
            "history before %s swept: %d versions, %d rank moves, %d plan summaries deleted",
            cutoff.isoformat(),
            versions,
            moves,
            summaries,
        )
        return swept

    async def run(self) -> None:
        """Sweep until cancelled: at once, then an interval after each sweep ends. A transient
        failure backs off and retries (``keep_running``); any other is logged, counted
        (``pmo_history_sweep_failures_total``) and tried again at the next interval: the
        history's housekeeping never stops the consumers beside it."""

        async def sweep() -> bool:
            try:
                await self.sweep()
            except Exception as exc:  # classified: transient ones propagate to back off
                if is_transient(exc):
                    raise
                metrics.HISTORY_SWEEP_FAILURES.inc()
                log.exception(
                    "history retention: the sweep failed; trying again in %g s", self._interval
                )
            return False

        await keep_running("history retention", sweep, lambda: asyncio.sleep(self._interval))
