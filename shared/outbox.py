"""The transactional outbox.

A handler writes its state change, its inbox record and the events it will publish (outbox rows)
in one Postgres transaction. The relay publishes unsent rows in id order and marks them sent; a
statement-level trigger NOTIFYs the relay so it wakes at once, and it also polls in case a
notification is missed. A crash between publish and mark republishes the rows: downstream
consumers deduplicate by the ``ce_id`` header, so the effect is still exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from asyncpg.pool import PoolConnectionProxy

from shared.db import usable
from shared.errors import is_transient
from shared.tracing import context_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One Kafka record to publish once the transaction that wrote it commits."""

    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]


async def add(conn: asyncpg.Connection[Any], messages: Sequence[OutboxMessage]) -> None:
    """Append messages to the outbox inside the caller's transaction.

    The trace context current now (the consumed batch's or the HTTP request's span) is stored
    with each row: the relay publishes later, from a context of its own."""
    if not messages:
        return
    trace = context_headers()
    await conn.copy_records_to_table(
        "outbox",
        columns=("topic", "key", "value", "headers"),
        records=[
            (m.topic, m.key, m.value, json.dumps({**m.headers, **trace} if trace else m.headers))
            for m in messages
        ],
    )


# The publisher returns once the record is handed to the producer; the awaitable it returns
# completes when the broker has acknowledged it.
Publish = Callable[[OutboxMessage], Awaitable[Awaitable[Any]]]


def producer_publish(producer: AIOKafkaProducer, *, topic_prefix: str = "") -> Publish:
    """Publish outbox rows through ``producer``: the row's topic (after ``topic_prefix``), key,
    value and headers, as they were written."""

    async def publish(message: OutboxMessage) -> Awaitable[Any]:
        sent: Awaitable[Any] = await producer.send(
            topic_prefix + message.topic,
            message.value,
            key=message.key,
            headers=[(k, v.encode()) for k, v in message.headers.items()],
        )
        return sent

    return publish


@dataclass(slots=True)
class RelayStats:
    published: int = 0
    batches: int = 0
    failures: int = 0


class OutboxRelay:
    """Publishes a schema's outbox. One relay per schema is active at a time (advisory lock), so
    records leave in the order they were written."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        schema: str,
        publish: Publish,
        *,
        batch_size: int = 2000,
        poll_interval: float = 1.0,
        retention_seconds: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention_seconds = retention_seconds
        self._lock_key = zlib.crc32(f"pmo.outbox.{schema}".encode()) - 2**31
        self._wake = asyncio.Event()
        self.stats = RelayStats()

    @property
    def channel(self) -> str:
        return f"{self._schema}_outbox"

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish up to one batch of unsent rows; returns how many were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock_key):
                return 0
            rows = await conn.fetch(
                "SELECT id, topic, key, value, headers FROM outbox"
                " WHERE sent_at IS NULL ORDER BY id LIMIT $1",
                self._batch_size,
            )
            if not rows:
                return 0
            pending = [
                await self._publish(
                    OutboxMessage(r["topic"], r["key"], r["value"], json.loads(r["headers"]))
                )
                for r in rows
            ]
            await asyncio.gather(*pending)
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        self.stats.published += len(rows)
        self.stats.batches += 1
        return len(rows)

    async def purge(self) -> int:
        """Delete rows sent longer ago than the retention; they are kept for inspection."""
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)",
                self._retention_seconds,
            )
        return int(status.split()[-1])

    async def backlog(self) -> tuple[int, float]:
        """Unsent rows and the age in seconds of the oldest one."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)"
                " AS age FROM outbox WHERE sent_at IS NULL"
            )
        assert row is not None
        return int(row["n"]), float(row["age"])

    async def run(self) -> None:
        """Relay until cancelled. Transient failures back off; nothing else is swallowed."""
        listener: PoolConnectionProxy[Any] | None = None
        backoff = 0.05
        last_purge = time.monotonic()
        try:
            while True:
                try:
                    if listener is None or not usable(listener):
                        if listener is not None:
                            await self._unlisten(listener)
                        listener = await self._listen()
                    published = await self.relay_once()
                    backoff = 0.05
                    if time.monotonic() - last_purge > 60:
                        await self.purge()
                        last_purge = time.monotonic()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self.stats.failures += 1
                    log.warning("outbox relay: transient failure, retrying", exc_info=exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if published < self._batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                    self._wake.clear()
        finally:
            if listener is not None:
                await self._unlisten(listener)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> PoolConnectionProxy[Any]:
        conn = await self._pool.acquire()
        await conn.add_listener(self.channel, self._on_notify)
        return conn

    async def _unlisten(self, conn: PoolConnectionProxy[Any]) -> None:
        if usable(conn):
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await conn.remove_listener(self.channel, self._on_notify)
        await self._pool.release(conn)  # a no-op when the pool took it back already
