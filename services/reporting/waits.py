"""Requests that wait for a project's revision: the project endpoint's ``min_revision`` with
``wait`` (docs/reporting.md, "Waiting for a revision"), a long poll.

An upstream system that has just submitted revision 7 of a project, or a person who has just
pressed save, asks for the project with ``min_revision=7&wait=10`` and gets it as soon as the
read model has that revision, in one request, rather than asking again and again. The API
process keeps one connection listening on the channel reporting's writes notify (migration
0013) while any request waits, and for each notice reads every project a request waits for,
in one statement; a request whose revision has come answers with the row read. A notice names
the projects (or portfolios) its statement wrote (migration 0019), and the watcher reads only
the waited-for projects it names: a commit of other projects costs it no read. The watcher
also reads every waited-for project every ``RECHECK_SECONDS`` without a notice, so a notice
lost with a broken connection delays an answer, never loses it; and it gives the connection
back to the pool when no request has waited for ``LINGER_SECONDS``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.reporting.repository import ReadModelQueries
from shared.db import usable
from shared.errors import is_transient

log = logging.getLogger(__name__)

CHANNEL = "reporting_projects"
RECHECK_SECONDS = 1.0
LINGER_SECONDS = 1.0
# The longest wait a request may ask for: below the graceful stop's 25 s (shared.runtime.serve),
# so a stopping process answers its waiting requests before it goes.
MAX_WAIT_SECONDS = 20.0

_Waiter = tuple[int, "asyncio.Future[dict[str, Any]]"]


class ProjectWaits:
    """The requests of one API process waiting for projects' revisions; ``pool`` gives the
    process's pool (its runtime opens it when the process starts)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool[Any]]) -> None:
        self._pool = pool
        self._waiting: dict[str, list[_Waiter]] = {}
        self._notice = asyncio.Event()
        # What the next check reads: these waited-for projects, or all of them.
        self._due: set[str] = set()
        self._all_due = False
        self._watcher: asyncio.Task[None] | None = None
        self.checks = 0  # reads the watcher has made, each of the waited-for projects due
        self.notices = 0  # notices the watcher has taken

    @property
    def waiting(self) -> int:
        return sum(map(len, self._waiting.values()))

    async def until(self, key: str, revision: int) -> dict[str, Any]:
        """Project ``key`` (as ``ReadModelQueries.project`` reads it) once it has ``revision``
        or a later one; the caller bounds the wait (``asyncio.timeout``). A failure of the
        watcher other than the database's being out of reach is raised here, to every waiting
        request."""
        reached: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiter: _Waiter = (revision, reached)
        self._waiting.setdefault(key, []).append(waiter)
        # Checked at once: the revision may have been written since the caller read the project.
        self._due.add(key)
        self._notice.set()
        try:
            while not reached.done():
                self._watch()
                await asyncio.wait([reached], timeout=RECHECK_SECONDS)
            return reached.result()
        finally:
            waiters = self._waiting[key]
            waiters.remove(waiter)
            if not waiters:
                del self._waiting[key]
            if reached.done() and not reached.cancelled():
                reached.exception()  # logged by the watcher; asyncio need not report it again

    async def close(self) -> None:
        """Stop the watcher now, giving its connection back (a waiting request then waits on
        for its own time, unanswered by notices)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None and not watcher.done():
            watcher.cancel()
            await asyncio.wait([watcher])

    def _watch(self) -> None:
        """Start the watcher unless it runs. One that stopped on the database's being out of
        reach is started again by the next request's next check, a second later at most."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._run(), name="project waits")

    async def _run(self) -> None:
        me = asyncio.current_task()
        try:
            async with self._pool().acquire() as conn:
                await conn.add_listener(CHANNEL, self._on_notice)
                try:
                    await self._serve(conn, me)
                finally:
                    if usable(conn):
                        await conn.remove_listener(CHANNEL, self._on_notice)
        except Exception as exc:
            if is_transient(exc):
                log.warning("project waits: the database is out of reach", exc_info=exc)
                return
            # Not retried: each waiting request fails with it (an error answer), and the next
            # request starts a watcher again.
            log.exception("project waits failed")
            for waiters in self._waiting.values():
                for _, reached in waiters:
                    if not reached.done():
                        reached.set_exception(exc)

    async def _serve(self, conn: PoolConnectionProxy[Any], me: asyncio.Task[Any] | None) -> None:
        loop = asyncio.get_running_loop()
        last_waited = loop.time()
        # What was written before this connection listened, or while an earlier watcher's
        # connection broke, was never noticed here: the first check reads every waited-for
        # project, and so does one every RECHECK_SECONDS whatever the notices.
        self._all_due = True
        self._notice.set()
        next_full = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notice.wait(), max(0.0, next_full - loop.time()))
            self._notice.clear()
            if loop.time() >= next_full:
                self._all_due = True
            if self._all_due:
                next_full = loop.time() + RECHECK_SECONDS
            if self._waiting:
                last_waited = loop.time()
                await self._check(conn)
            elif loop.time() - last_waited >= LINGER_SECONDS:
                # Given up here, before the listener is removed: a request from now on starts
                # a watcher of its own rather than wait for this one's next check.
                if self._watcher is me:
                    self._watcher = None
                return

    async def _check(self, conn: PoolConnectionProxy[Any]) -> None:
        if self._all_due:
            keys = list(self._waiting)
        else:
            keys = [key for key in self._due if key in self._waiting]
        # Taken before the read: a notice that comes during it is for the next check.
        self._due.clear()
        self._all_due = False
        if not keys:
            return
        rows = await ReadModelQueries.projects_now(conn, keys)
        self.checks += 1
        for key, row in rows.items():
            for revision, reached in self._waiting.get(key, ()):
                if row["revision"] >= revision and not reached.done():
                    reached.set_result(row)

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        """A notice's payload (migration 0019): keys, one a line; portfolios, each ending in
        '/'; or empty, any project."""
        self.notices += 1
        if not payload:
            self._all_due = True
        else:
            named = set(str(payload).split("\n"))
            due = {key for key in self._waiting if key in named or _portfolio(key) in named}
            if not due:
                return
            self._due |= due
        self._notice.set()


def _portfolio(key: str) -> str:
    """The portfolio part of a project key, as a notice names a portfolio: ``retail/``."""
    return key[: key.find("/") + 1]
