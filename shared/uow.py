"""The unit of work: one Postgres transaction holding a handler's state change, its inbox
records and its outbox records. It commits once, on a clean exit, and rolls back otherwise.

A batch's outbox rows, and the writes a handler defers (``defer``: its last ones, which the
transaction does not read again), go to Postgres in one statement just before the commit: one
round trip for all of them instead of one each."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from shared import inbox, outbox
from shared.db import Statement, combined, copied, insert_rows, insert_statement, usable
from shared.outbox import OutboxMessage


class UnitOfWork(Protocol):
    """The port every handler's transaction offers: inbox, outbox and portfolio locks.
    ``async with`` commits on a clean exit and rolls back otherwise."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def claim(self, event_ids: Sequence[str]) -> set[str]: ...

    async def release(self, event_ids: Sequence[str]) -> None: ...

    async def emit(self, messages: Sequence[OutboxMessage]) -> None: ...

    async def lock(self, *names: str) -> None: ...


class PostgresUnitOfWork:
    """Base for each service's unit of work; subclasses bind their repositories in ``_bind``."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool
        self._conn: PoolConnectionProxy[Any] | None = None
        self._tx: Transaction | None = None
        self._emitted = False
        # Written at the commit, in one statement with the outbox rows emitted meanwhile.
        self._deferred: list[Statement] = []
        self._outbox: list[tuple[Any, ...]] = []

    @property
    def conn(self) -> PoolConnectionProxy[Any]:
        assert self._conn is not None, "unit of work used outside 'async with'"
        return self._conn

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        """Create repositories on ``conn``."""

    async def __aenter__(self) -> Self:
        self._conn = await self._pool.acquire()
        self._emitted = False
        self._deferred = []
        self._outbox = []
        self._tx = self._conn.transaction()
        await self._tx.start()
        self._bind(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        assert self._tx is not None
        try:
            if exc_type is None:
                try:
                    await self._write_deferred()
                except BaseException:
                    if usable(self._conn):
                        await self._tx.rollback()
                    raise
                await self._tx.commit()
                if self._emitted:
                    outbox.committed(self._pool)
            elif usable(self._conn):
                await self._tx.rollback()
            # else: the connection was lost, and its transaction with it; the error that ends
            # the unit of work (a lost connection, transient) propagates unchanged.
        finally:
            await self._pool.release(self._conn)
            self._conn = self._tx = None
            self._deferred = []
            self._outbox = []

    async def _write_deferred(self) -> None:
        """The deferred writes and the outbox rows, in one round trip before the commit (the
        outbox rows copied first if many small emits added up to many rows)."""
        statements = list(self._deferred)
        if copied(self._outbox):
            await self._write_outbox()
        elif self._outbox:
            statements.append(insert_statement("outbox", outbox.COLUMNS, self._outbox))
        if statements:
            statement = combined(statements)
            await self.conn.execute(statement.sql, *statement.args)

    async def _write_outbox(self) -> None:
        """Write the outbox rows emitted so far, now."""
        await insert_rows(self.conn, "outbox", outbox.COLUMNS, self._outbox)
        self._outbox = []

    async def claim(self, event_ids: Sequence[str]) -> set[str]:
        """Inbox: record these ids; returns those never seen before."""
        return await inbox.claim(self.conn, event_ids)  # type: ignore[arg-type]

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        """Inbox: which of these ids are recorded already (nothing is claimed)."""
        return await inbox.seen(self.conn, event_ids)  # type: ignore[arg-type]

    async def release(self, event_ids: Sequence[str]) -> None:
        """Inbox: forget these ids (the events had no effect)."""
        await inbox.release(self.conn, event_ids)  # type: ignore[arg-type]

    async def emit(self, messages: Sequence[OutboxMessage]) -> None:
        """Outbox: publish these once the transaction commits.

        A batch's few rows are written at the commit, in the round trip of the deferred writes
        (``defer``); many, or large ones, are copied now, after the rows emitted before them:
        the outbox numbers its rows in the order they were emitted."""
        if not messages:
            return
        self._emitted = True
        rows = outbox.rows(messages)
        if not copied(rows, large=outbox.large(messages)):
            self._outbox.extend(rows)
            return
        await self._write_outbox()
        await insert_rows(self.conn, "outbox", outbox.COLUMNS, rows, large=True)

    def defer(self, statement: Statement) -> None:
        """Run ``statement`` when the unit of work commits, in one round trip with the other
        deferred writes and the outbox rows (``combined``): for the last writes of a handler,
        which its transaction does not read again, each of different rows."""
        self._deferred.append(statement)

    async def lock(self, *names: str) -> None:
        """Serialise work on these names (e.g. portfolios) across replicas until commit.

        Advisory locks are shared by the whole database, and services may share one: a name
        is locked within the service's schema (the connection's), so scoring's lock on a
        portfolio and capacity's on the same portfolio are different locks.

        The names are taken in one statement, in sorted order: every caller's order, so two
        batches never each hold a lock the other waits for."""
        unique = sorted(set(names))
        if len(unique) == 1:
            await self.conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})", unique[0])
        elif unique:
            # A volatile function in the select list runs after the ORDER BY, row by row.
            await self.conn.execute(
                f"SELECT pg_advisory_xact_lock({_LOCK_KEY.replace('$1', 'name')})"
                " FROM unnest($1::text[]) WITH ORDINALITY AS t (name, position)"
                " ORDER BY position",
                unique,
            )

    async def try_lock(self, name: str) -> bool:
        """Take ``name``'s lock (as ``lock``) until commit if nobody holds it; False, at once,
        if somebody does."""
        taken: bool = await self.conn.fetchval(
            f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})", name
        )
        return taken


# A name's advisory lock key, within the connection's schema (see ``lock``).
_LOCK_KEY = "hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0)"
