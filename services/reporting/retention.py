"""The history's retention: reporting keeps its history for a window, not forever.

Every change of a project, every rank move and every plan summary is kept so that the API's
``as_of`` and BI's history views can read any past instant (docs/reporting.md). A busy
portfolio's history grows by hundreds of megabytes a day, most of it rank moves. With
``PMO_REPORTING_HISTORY_RETENTION_DAYS`` set, a worker sweeps the history as it starts and
``PMO_REPORTING_HISTORY_SWEEP_INTERVAL_SECONDS`` after each sweep, and deletes what no instant
within the window reads (``HistoryPurge``): an instant in the window reads the same before and
after a sweep. A sweep records its cutoff (``history_kept``) before it deletes anything, and
the API refuses an instant before the window or before the latest recorded cutoff rather than
answer from a partial history: a window grown later, or a retention unset, brings nothing
back, and is not answered as if it did.

A sweep goes through the projects by key, a few hundred at a time, and deletes their rows a
bounded number a transaction, so that it never holds many rows' locks or one long transaction
beside the consumers; then the plan summaries, likewise. Its deletes are idempotent: a sweep
interrupted (a stop, a transient failure) is simply run again, and two workers sweeping at once
delete each row once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import asyncpg

from services.reporting.repository import RANK_MOVES_BY_TIME, HistoryPurge
from shared import metrics
from shared.db import closed_on_failure
from shared.loops import Isolation, keep_running

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

    def __add__(self, other: Swept) -> Swept:
        return Swept(
            self.versions + other.versions,
            self.moves + other.moves,
            self.summaries + other.summaries,
        )


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
        if projects < 1 or rows < 1:
            raise ValueError("a sweep takes at least one project and one row at a time")
        self._projects = projects
        self._rows = rows
        # A part of a sweep that fails with an unexpected error is logged, counted and left
        # to the next sweep; the others go on, and nothing stops the consumers beside it.
        self._isolation = Isolation(
            "history retention:",
            retry_after=interval,
            on_failure=metrics.HISTORY_SWEEP_FAILURES.inc,
        )

    def cutoff(self) -> datetime:
        """The earliest instant kept: everything from it on reads as it did. A minute before
        the window's start (``SKEW``), so that an API host whose clock runs behind this one's
        by less never answers an instant the sweep has already let go."""
        return self._clock() - self._retention - SKEW

    async def sweep(self) -> Swept:
        """Delete, from the whole history, what no instant from now's cutoff on reads. A batch
        of projects, or a portfolio's summaries, that fails with an unexpected error is logged,
        counted (``pmo_history_sweep_failures_total``) and left to the next sweep; the others
        are swept. Transient failures propagate, to back off the whole sweep."""
        # Without its index the deletes are right, only slower: a build that fails (a full
        # disk, say) is no reason to stop freeing space.
        ready = await self._isolation.attempt(f"building {RANK_MOVES_BY_TIME}", self.prepare, True)
        if not ready:
            log.info(
                "history retention: another replica is building %s; sweeping later",
                RANK_MOVES_BY_TIME,
            )
            return Swept()
        cutoff = self.cutoff()
        # Recorded, and committed, before anything is deleted: the API refuses an instant
        # before it from then on, whatever window it was configured with.
        async with self._pool().acquire() as conn:
            await HistoryPurge(conn).keep_from(cutoff)
        swept = Swept()
        after = ""
        while True:
            async with self._pool().acquire() as conn:
                keys = await HistoryPurge(conn).project_keys(after, self._projects)
            if not keys:
                break
            swept += await self._isolation.attempt(
                f"sweeping the projects from {keys[0]!r}",
                partial(self._projects_of, keys, cutoff),
                Swept(),
            )
            after = keys[-1]
        async with self._pool().acquire() as conn:
            portfolios = await HistoryPurge(conn).portfolios()
        for portfolio in portfolios:
            swept += await self._isolation.attempt(
                f"sweeping {portfolio}'s plan summaries",
                partial(self._summaries_of, portfolio, cutoff),
                Swept(),
            )
        log.info(
            "history before %s swept: %d versions, %d rank moves, %d plan summaries deleted",
            cutoff.isoformat(),
            swept.versions,
            swept.moves,
            swept.summaries,
        )
        return swept

    async def prepare(self) -> bool:
        """Whether the sweep's index is there (``RANK_MOVES_BY_TIME``), built now,
        concurrently, if it is not (or was left invalid); False when another replica is
        building it. The build's lock is the session's: given back before the connection
        returns to the pool, or the connection is closed, which gives it back, when that fails
        or is cancelled (the pool keeps no session state; shared/db.py)."""
        async with self._pool().acquire() as conn:
            purge = HistoryPurge(conn)
            if await purge.index_valid():
                return True
            try:
                if not await purge.take_build():
                    return False
                valid = await purge.index_valid()  # built meanwhile by the lock's last holder?
                if valid:
                    return True
                if valid is not None:
                    log.warning(
                        "history retention: %s was left invalid; building it again",
                        RANK_MOVES_BY_TIME,
                    )
                log.info("history retention: building %s", RANK_MOVES_BY_TIME)
                await purge.build_index(invalid=valid is not None)
                return True
            finally:
                with closed_on_failure(conn):
                    await purge.give_build()

    async def _projects_of(self, keys: Sequence[str], cutoff: datetime) -> Swept:
        """Sweep ``keys``' versions and rank moves, at most ``rows`` of each a transaction."""
        async with self._pool().acquire() as conn:
            kept = await HistoryPurge(conn).kept(keys, cutoff)
        swept = Swept()
        while True:
            async with self._pool().acquire() as conn, conn.transaction():
                versions, moves = await HistoryPurge(conn).projects(kept, cutoff, self._rows)
            metrics.HISTORY_PURGED.labels("projects_history").inc(versions)
            metrics.HISTORY_PURGED.labels("rank_history").inc(moves)
            swept += Swept(versions=versions, moves=moves)
            await asyncio.sleep(0)  # the consumers' turn between transactions
            if max(versions, moves) < self._rows:
                return swept

    async def _summaries_of(self, portfolio: str, cutoff: datetime) -> Swept:
        """Sweep ``portfolio``'s plan summaries, at most ``rows`` a statement."""
        async with self._pool().acquire() as conn:
            kept = await HistoryPurge(conn).kept_summary(portfolio, cutoff)
        deleted = 0
        while kept is not None:
            async with self._pool().acquire() as conn:
                done = await HistoryPurge(conn).summaries(portfolio, kept, cutoff, self._rows)
            metrics.HISTORY_PURGED.labels("plan_summaries").inc(done)
            deleted += done
            await asyncio.sleep(0)
            if done < self._rows:
                break
        return Swept(summaries=deleted)

    async def run(self) -> None:
        """Sweep until cancelled: at once, then an interval after each sweep ends. A transient
        failure backs off and retries (``keep_running``); any other is logged, counted
        (``pmo_history_sweep_failures_total``) and tried again at the next interval: the
        history's housekeeping never stops the consumers beside it."""

        async def sweep() -> bool:
            await self._isolation.attempt("sweeping", self.sweep, Swept())
            return False

        await keep_running("history retention", sweep, lambda: asyncio.sleep(self._interval))
