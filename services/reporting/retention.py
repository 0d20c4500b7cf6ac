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
from shared.loops import keep_running

log = logging.getLogger(__name__)

# Projects a sweep goes through at a time, and rows of each table a transaction of it deletes
# at most: a first sweep over years of a busy portfolio's rank moves is many transactions.
PROJECTS = 500
ROWS = 10_000


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
        """The earliest instant kept: everything from it on reads as it did."""
        return self._clock() - self._retention

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
        while True:
            async with self._pool().acquire() as conn:
                deleted = await HistoryPurge(conn).summaries(cutoff, self._rows)
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
        """Sweep until cancelled: at once, then every interval."""

        async def sweep() -> bool:
            await self.sweep()
            return False

        await keep_running("history retention", sweep, lambda: asyncio.sleep(self._interval))
