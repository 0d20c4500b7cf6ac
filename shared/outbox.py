"""The transactional outbox.

A handler writes its state change, its inbox record and the events it will publish (outbox rows)
in one Postgres transaction. The relay publishes unsent rows in id order and marks them sent; a
statement-level trigger NOTIFYs the relay so it wakes at once, and it also polls in case a
notification is missed. A unit of work that commits rows wakes the relays of its own process
directly (``committed``), without waiting for the notification to come back from Postgres.
A crash between publish and mark republishes the rows: downstream consumers deduplicate by the
``ce_id`` header, so the effect is still exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from asyncpg.pool import PoolConnectionProxy
from pydantic_core import from_json, to_json

from shared import metrics
from shared.broker import portfolio_partitioner
from shared.db import closed_on_failure, insert_rows, usable
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
    """Append messages to the outbox inside the caller's transaction (``rows``)."""
    if messages:
        await insert_rows(conn, "outbox", COLUMNS, rows(messages), large=large(messages))


def rows(messages: Sequence[OutboxMessage]) -> list[tuple[Any, ...]]:
    """The outbox rows of ``messages``.

    The trace context current now (the consumed batch's or the HTTP request's span) is stored
    with each row: the relay publishes later, from a context of its own."""
    trace = context_headers()
    return [
        (m.topic, m.key, m.value, to_json({**m.headers, **trace} if trace else m.headers).decode())
        for m in messages
    ]


def large(messages: Sequence[OutboxMessage]) -> bool:
    """Whether these messages' values are too large to insert as arrays (``insert_rows``)."""
    return sum(len(m.value) for m in messages) > LARGE_BYTES


def committed(pool: asyncpg.Pool[Any]) -> None:
    """Rows were committed to the outbox of ``pool``'s schema: wake the relays of this process
    that publish it. (A relay in another process, a replica's, wakes on the notification.)"""
    for relay in _LOCAL:
        if relay.pool is pool:
            relay.wake()


# The relays of this process.
_LOCAL: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


# Above this many bytes of values, rows are copied in whatever their number (``insert_rows``).
LARGE_BYTES = 1024 * 1024

# The outbox's columns a writer fills, each (name, Postgres type).
COLUMNS = (("topic", "text"), ("key", "bytea"), ("value", "bytea"), ("headers", "jsonb"))


# A publisher hands a batch of rows to the broker in their order and returns once the broker has
# acknowledged every one of them; it raises if any was not.
Publish = Callable[[Sequence[OutboxMessage]], Awaitable[None]]


def producer_publish(producer: AIOKafkaProducer, *, topic_prefix: str = "") -> Publish:
    """Publish outbox rows through ``producer``: the row's topic (after ``topic_prefix``), key,
    value and headers, as they were written, partitioned by ``portfolio_partitioner``.

    Rows are appended to one record batch per partition (``create_batch``/``send_batch``), so
    the producer's per-record work is the batch encoder's: a record handed over one at a time
    through ``send`` cost about 17 µs here, appended to a batch about 6 µs (docs/performance.md).
    A partition's batches are queued in row order and the producer keeps one request per
    partition in flight, so each partition receives its rows in the order they were written.

    Each batch is closed before it is queued: the producer sends a closed batch at once, where
    an open one waits out the producer's linger (5 ms; ``PRODUCER_OPTIONS``) for records that a
    relay's batch never gets, since the relay has handed over all it has. The linger was in
    every pass, between intake's commit and the broker's acknowledgement (docs/performance.md)."""

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        # Keys of one portfolio share a partition: computed once per (topic, portfolio).
        chosen: dict[tuple[str, bytes | None], int] = {}
        sent: list[asyncio.Future[Any]] = []
        for m in messages:
            topic = topic_prefix + m.topic
            portfolio = m.key.split(b"/", 1)[0] if m.key else None
            partition = chosen.get((topic, portfolio), -1)
            if partition < 0:
                if topic not in partitions:
                    every = sorted(await producer.partitions_for(topic))
                    available = producer.client.cluster.available_partitions_for_topic(topic)
                    partitions[topic] = (every, sorted(available or every))
                partition = chosen[(topic, portfolio)] = portfolio_partitioner(
                    m.key, *partitions[topic]
                )
            headers = [(k, v.encode()) for k, v in m.headers.items()]
            batch = open_batches.get((topic, partition))
            if batch is not None and batch.append(
                key=m.key, value=m.value, timestamp=None, headers=headers
            ):
                continue
            if batch is not None:  # full (and so closed): queue it, start the next one
                sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if not batch.append(key=m.key, value=m.value, timestamp=None, headers=headers):
                # Larger than a batch: sent alone, where the producer's size limit applies.
                open_batches.pop((topic, partition), None)
                sent.append(
                    await producer.send(
                        topic, m.value, key=m.key, partition=partition, headers=headers
                    )
                )
                continue
            open_batches[(topic, partition)] = batch
        for (topic, partition), batch in open_batches.items():
            batch.close()
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)

    return publish


# The relay's read: a batch of unsent rows after a given id, in id order, at most $2 rows and,
# past its first row, only while the values before a row add up to less than $3 bytes (a
# rescore's records carry hundreds of projects each). octet_length reads a stored value's
# size from its header, without fetching the value.
UNSENT = (
    "SELECT id, topic, key, value, headers FROM ("
    "SELECT id, topic, key, value, headers,"
    " sum(octet_length(value)) OVER (ORDER BY id) - octet_length(value) AS before"
    " FROM outbox WHERE sent_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
    ") unsent WHERE before < $3 ORDER BY id"
)


# The relay's session: idle seconds before the server probes the connection, seconds between
# probes, probes unanswered before it gives up; and how long data it sent may stay
# unacknowledged before it gives up (take_turn).
KEEPALIVES = (10, 5, 3)
USER_TIMEOUT_MS = 25_000


def _messages(rows: Sequence[asyncpg.Record]) -> list[OutboxMessage]:
    return [OutboxMessage(r["topic"], r["key"], r["value"], from_json(r["headers"])) for r in rows]


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
        batch_bytes: int = 4 * 1024 * 1024,
        batches_per_pass: int = 10,
        poll_interval: float = 1.0,
        retention_seconds: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._publish = publish
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._batches_per_pass = batches_per_pass
        self._poll_interval = poll_interval
        self._retention_seconds = retention_seconds
        self._lock_key = zlib.crc32(f"pmo.outbox.{schema}".encode()) - 2**31
        self._wake = asyncio.Event()
        self._more = False  # whether the last pass stopped at its limit with rows left
        self._holder: PoolConnectionProxy[Any] | None = None  # run's connection, with the turn
        self._retake_at = 0.0  # after giving the turn up, not before this (monotonic clock)
        self.stats = RelayStats()
        _LOCAL.add(self)

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        return self._pool

    @property
    def channel(self) -> str:
        return f"{self._schema}_outbox"

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish unsent rows, up to ``batches_per_pass`` batches (each at most ``batch_size``
        rows and, past its first, ``batch_bytes`` of values); returns how many were published.

        A running relay (``run``) passes on the connection that holds its turn; called on its
        own (not beside its own ``run``: one connection runs one statement at a time), the pass
        takes the turn on a pooled connection and gives it back after. Each
        statement is its own transaction: a pass is two statements for a batch, the read and
        the mark (docs/performance.md).

        The batches are pipelined: while the broker acknowledges one batch, the next is read,
        and while Postgres marks one batch sent, the next is encoded for the producer. A batch
        is marked sent only once the broker has acknowledged all of it; a failure leaves the
        batch it met, and every one after it, unmarked, to be published again (consumers
        deduplicate)."""
        self._more = False
        if self._holder is not None and usable(self._holder):
            return await self._pass(self._holder)
        async with self._pool.acquire() as conn:
            try:
                if not await self.take_turn(conn):
                    return 0
                return await self._pass(conn)
            finally:
                await self.give_turn(conn)

    async def _pass(self, conn: PoolConnectionProxy[Any]) -> int:
        rows = await self._unsent(conn, after=0)
        if not rows:
            return 0
        published = 0
        acks: asyncio.Future[None] = asyncio.ensure_future(self._publish(_messages(rows)))
        following: asyncio.Future[None] | None = None
        try:
            for turn in range(1, self._batches_per_pass + 1):
                # A batch cut short by its row or byte limit may have rows after it.
                full = len(rows) == self._batch_size or (
                    sum(len(r["value"]) for r in rows) >= self._batch_bytes
                )
                more = full and turn < self._batches_per_pass
                after = rows[-1]["id"]
                upcoming = await self._unsent(conn, after=after) if more else []
                await acks
                if upcoming:
                    following = asyncio.ensure_future(self._publish(_messages(upcoming)))
                await conn.execute(
                    "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows],
                )
                published += len(rows)
                self.stats.published += len(rows)
                metrics.OUTBOX_PUBLISHED.labels(self._schema).inc(len(rows))
                self.stats.batches += 1
                if following is None:
                    # Stopped at the pass's limit after a full batch: rows may be left.
                    self._more = full and not more
                    break
                rows, acks, following = upcoming, following, None
        finally:
            for pending in (acks, following):
                if pending is not None and not pending.done():
                    pending.cancel()
                    await asyncio.wait([pending])
        return published

    async def take_turn(self, conn: PoolConnectionProxy[Any]) -> bool:
        """Whether this relay has its schema's turn on ``conn``: the session's advisory lock,
        held until ``give_turn`` or until the connection closes, with the session set up for
        the relay's statements. Outside a transaction: the lock is the session's.

        - Sorting off. Unsent rows are read in id order through the partial index
          ``outbox_unsent``. After a transaction commits many rows into an outbox last analysed
          when it held few (a rescore's 100,000), the planner expects a few, and its plan sorted
          every unsent row, on disk, for each batch it read (docs/performance.md). With sorting
          off, the index's order is the plan.
        - Sequential scans off. The session plans a statement for its first five runs and then
          keeps a generic plan while it lives: made while the outbox held a few rows, the mark's
          was a sequential scan, and every pass after it read all the rows kept to mark a few
          (docs/performance.md). Each statement of the relay finds its rows through an index.
        - Asynchronous commits. A mark lost with the last moments before a server crash leaves
          its rows unsent, so they are published again and deduplicated downstream, as after a
          relay crash between publish and mark; the relay does not wait for the disk.
        - TCP keepalives of seconds, and a user timeout. A holder whose host vanished without
          closing its connection (a node lost, a network cut) keeps its lock until the server
          sees the connection is dead; with the operating system's defaults that takes hours
          when the connection is idle (keepalives) and about 15 minutes when the server has
          sent something unacknowledged, such as a notification (retransmissions), with these
          under half a minute either way, and another replica's relay then takes over."""
        assert not conn.is_in_transaction(), "the relay's turn is its session's"
        turn: bool = await conn.fetchval(
            "SELECT pg_try_advisory_lock($1) AND set_config('enable_sort', 'off', false) = 'off'"
            " AND set_config('enable_seqscan', 'off', false) = 'off'"
            " AND set_config('synchronous_commit', 'off', false) = 'off'"
            # Over a Unix socket the keepalive settings read 0 whatever they are set to.
            " AND set_config('tcp_keepalives_idle', $2, false) IS NOT NULL"
            " AND set_config('tcp_keepalives_interval', $3, false) IS NOT NULL"
            " AND set_config('tcp_keepalives_count', $4, false) IS NOT NULL"
            " AND set_config('tcp_user_timeout', $5, false) IS NOT NULL",
            self._lock_key,
            *(str(v) for v in KEEPALIVES),
            str(USER_TIMEOUT_MS),
        )
        return turn

    async def give_turn(self, conn: PoolConnectionProxy[Any]) -> None:
        """Release the turn and the session's settings before ``conn`` goes back to the pool,
        which does not reset sessions (shared/db.py). A connection that breaks is closed, and
        the server releases what its session held."""
        if not usable(conn):
            return
        with closed_on_failure(conn):
            await conn.execute(
                "SELECT pg_advisory_unlock_all(); RESET enable_sort; RESET enable_seqscan;"
                " RESET synchronous_commit;"
                " RESET tcp_keepalives_idle; RESET tcp_keepalives_interval;"
                " RESET tcp_keepalives_count; RESET tcp_user_timeout"
            )

    async def _unsent(self, conn: PoolConnectionProxy[Any], *, after: int) -> list[asyncpg.Record]:
        return await conn.fetch(UNSENT, after, self._batch_size, self._batch_bytes)

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
        """Relay until cancelled. Transient failures back off; nothing else is swallowed.

        The relay listens on a connection of its own and tries for its schema's turn there
        until it has it, at most once a poll interval: every commit that writes outbox rows
        notifies every replica, and a waiting replica that asked on each notification made a
        round trip for each of the holder's commits (docs/performance.md). It then passes on
        that connection for as long as it stays open and its passes succeed. Another replica's
        relay waits so, and takes over within a poll interval when the holder stops, its
        connection breaks (the server releases a closed session's locks) or a pass fails (the
        holder gives the turn up before it backs off)."""
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
                    if self._holder is None and time.monotonic() >= self._retake_at:
                        if await self.take_turn(listener):
                            self._holder = listener
                        else:
                            # Another replica's relay has the turn: ask again at the next
                            # poll, not at every notification its commits send.
                            self._retake_at = time.monotonic() + self._poll_interval
                    if self._holder is not None:
                        await self.relay_once()
                    backoff = 0.05
                    if time.monotonic() - last_purge > 60:
                        await self.purge()
                        last_purge = time.monotonic()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self.stats.failures += 1
                    log.warning("outbox relay: transient failure, retrying", exc_info=exc)
                    if self._holder is not None:
                        # A replica that can reach the broker takes over meanwhile: this one
                        # tries again no sooner than another's poll would have come by.
                        holder, self._holder = self._holder, None
                        self._retake_at = time.monotonic() + self._poll_interval
                        await self.give_turn(holder)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if not self._more:
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
        self._holder = None
        try:
            if usable(conn):
                with closed_on_failure(conn):
                    await conn.remove_listener(self.channel, self._on_notify)
                await self.give_turn(conn)
        finally:
            await self._pool.release(conn)  # a no-op when the pool took it back already
