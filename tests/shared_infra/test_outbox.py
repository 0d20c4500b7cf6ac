"""The outbox relay against real Postgres and the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared import metrics, outbox
from shared.broker import PRODUCER_OPTIONS, make_producer
from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.outbox import OutboxMessage, OutboxRelay, producer_publish
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic, TopicNames
from shared.uow import PostgresUnitOfWork
from tests.conftest import service_pool, service_url
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_rows_are_published_in_order_and_marked_and_survive_a_failed_publish(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t"
    )
    topic = TopicNames(kafka.topic_prefix)(Topic.SCORES)
    published: list[OutboxMessage] = []
    fail_once = True

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        nonlocal fail_once
        if fail_once:
            fail_once = False
            await send(messages[:3])
            raise ConnectionError("broker went away")  # mid-batch: nothing gets marked
        published.extend(messages)
        await send(messages)

    producer = make_producer(kafka, client_id="outbox-test")
    send = producer_publish(producer)
    await producer.start()
    try:
        relay = OutboxRelay(pool, "scoring", publish, batch_size=100)
        messages = [
            OutboxMessage(topic, b"retail/jira/P", f"{i}".encode(), {"ce_id": f"e{i}"})
            for i in range(10)
        ]
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, messages)
        with pytest.raises(ConnectionError):
            await relay.relay_once()
        assert await relay.backlog() == (10, pytest.approx(0, abs=60))
        counted = metrics.OUTBOX_PUBLISHED.labels("scoring")._value.get()
        assert await relay.relay_once() == 10
        # Counted once the broker has them all: the failed pass counted none.
        assert metrics.OUTBOX_PUBLISHED.labels("scoring")._value.get() == counted + 10
        assert (await relay.backlog())[0] == 0
        assert await relay.relay_once() == 0
    finally:
        await producer.stop()
        await pool.close()
    assert [m.value for m in published] == [f"{i}".encode() for i in range(10)]

    seen = [value for _, value in await consume(kafka, topic, 13)]
    # The first three were published before the failure and again after it (at-least-once);
    # one key, so one partition, so the order of each pass is the order of the outbox.
    assert seen == [b"0", b"1", b"2"] + [f"{i}".encode() for i in range(10)]


async def test_a_pass_pipelines_batches_keeps_each_portfolios_order_and_marks_batch_by_batch(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    """Batches of 3, two per pass. A failure in a pass's second batch, after the broker had
    part of it, leaves that batch and every one after it unsent, and the first marked sent: the
    batch is published again, the first is not. Two portfolios (their own partitions, or one
    shared) and a record larger than the producer's batch all arrive, each portfolio's records
    in outbox order."""
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t"
    )
    topic = TopicNames(kafka.topic_prefix)(Topic.SCORES)
    producer = make_producer(kafka, client_id="outbox-test")
    send = producer_publish(producer)
    calls: list[int] = []
    fail_on_call = 2

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        calls.append(len(messages))
        await send(messages)
        if len(calls) == fail_on_call:
            raise ConnectionError("broker went away")  # after the broker had the batch

    # Larger than the producer's batch, smaller than a request may be (1 MiB).
    large = b"x" * (PRODUCER_OPTIONS["max_batch_size"] + 10_000)
    values = [large if i == 4 else f"{i}".encode() for i in range(11)]
    messages = [
        OutboxMessage(topic, f"{'retail' if i % 2 else 'energy'}/jira/P{i}".encode(), v, {})
        for i, v in enumerate(values)
    ]
    await producer.start()
    try:
        relay = OutboxRelay(pool, "scoring", publish, batch_size=3, batches_per_pass=2)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, messages)
        with pytest.raises(ConnectionError):
            await relay.relay_once()
        assert (await relay.backlog())[0] == 8  # rows 0-2 marked; 3-5 published, not marked
        assert [await relay.relay_once() for _ in range(4)] == [6, 2, 0, 0]
        assert calls == [3, 3, 3, 3, 2]
    finally:
        await producer.stop()
        await pool.close()

    received = await consume(kafka, topic, 14)
    assert len(received) == 14
    for portfolio in (b"retail", b"energy"):
        mine = [v for k, v in received if k.startswith(portfolio)]

        def rows(first: int, last: int, portfolio: bytes = portfolio) -> list[bytes]:
            return [
                v
                for m, v in zip(messages[first:last], values[first:last], strict=True)
                if m.key is not None and m.key.startswith(portfolio)
            ]

        # Rows 0-5 in the failed pass, then 3-10 again from the batch it left unmarked.
        assert mine == rows(0, 6) + rows(3, 11)


async def test_batches_are_bounded_by_bytes_and_a_full_pass_is_followed_at_once(
    database: DatabaseSettings,
) -> None:
    """Records of hundreds of KiB (a rescore's, many projects each) are read a few at a time:
    past its first row, a batch holds only while the values before a row total less than
    ``batch_bytes``. A pass that stops at its limit with rows left is followed at once, not
    after the poll interval."""
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t"
    )
    batches: list[list[bytes]] = []

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        batches.append([m.value for m in messages])

    kib = 1024
    values = [bytes([65 + i]) * (300 * kib) for i in range(10)] + [b"small"] * 3
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM outbox")
            await outbox.add(conn, [OutboxMessage("t", b"retail/jira/P", v, {}) for v in values])
        relay = OutboxRelay(
            pool, "scoring", publish, batch_bytes=1000 * kib, batches_per_pass=2, poll_interval=60
        )
        assert await relay.relay_once() == 8  # two batches of four: 0, 300, 600, 900 KiB before
        assert [len(b) for b in batches] == [4, 4]
        batches.clear()
        # The rest, by the running relay: the first pass stops at its limit (rows left), and
        # the next follows without waiting for a notification (an UPDATE sends none) or the
        # 60 s poll.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE outbox SET sent_at = NULL")
        assert not relay._wake.is_set()
        running = asyncio.create_task(relay.run())
        try:

            async def all_sent() -> bool:
                return (await relay.backlog())[0] == 0

            await eventually(all_sent, within=20, what="every row sent")
        finally:
            await _stop(running)
        assert [len(b) for b in batches] == [4, 4, 5]
        assert [v for b in batches for v in b] == values
    finally:
        await pool.close()


async def test_a_relays_batches_are_sent_at_once_not_after_the_producers_linger(
    kafka: KafkaSettings,
) -> None:
    """A relay hands over every row it has, so its batches are closed and the producer sends
    them at once: with a linger of ten minutes, publishing still returns as soon as the broker
    has acknowledged, whether a partition's rows fit one batch or fill several (the last one
    open until closed). A batch left open would wait out the linger."""
    topic = TopicNames(kafka.topic_prefix)(Topic.SCORES)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        **{**PRODUCER_OPTIONS, "linger_ms": 600_000, "max_batch_size": 16 * 1024},
    )
    await producer.start()
    try:
        send = producer_publish(producer)
        few = [OutboxMessage(topic, b"retail/jira/P", b"v%d" % i, {}) for i in range(3)]
        many = [OutboxMessage(topic, b"bank/jira/P", b"x" * 1024, {}) for _ in range(40)]
        async with asyncio.timeout(30):
            await send(few)
            await send(many)
    finally:
        await producer.stop()
    assert len(await consume(kafka, topic, 43)) == 43


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def _two_relays(
    database: DatabaseSettings, kafka: KafkaSettings
) -> AsyncIterator[tuple[asyncpg.Pool[Any], str, outbox.Publish, list[asyncio.Task[None]]]]:
    """For replicas' relays of one schema: scoring's pool on its migrated database, its scores
    topic, a started producer's publisher, and the list of the relays' tasks, every one of
    them stopped at the end, then the producer and the pool."""
    producer = make_producer(kafka, client_id="outbox-test")
    running: list[asyncio.Task[None]] = []
    async with service_pool(database, "scoring", max_size=4) as pool:
        await producer.start()
        try:
            yield (
                pool,
                TopicNames(kafka.topic_prefix)(Topic.SCORES),
                producer_publish(producer),
                running,
            )
        finally:
            for task in running:
                await _stop(task)
            await producer.stop()


async def _holding_the_turn(relay: OutboxRelay, what: str) -> asyncio.Task[None]:
    """``relay`` running, once it holds its schema's turn (stopped again if it never does)."""
    task = asyncio.create_task(relay.run())

    async def holds_turn() -> bool:
        return relay._holder is not None

    try:
        await eventually(holds_turn, what=what)
    except BaseException:
        await _stop(task)
        raise
    return task


async def consume(kafka: KafkaSettings, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """The first ``count`` (key, value) records of ``topic``, partition by partition."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"probe-{uuid.uuid4().hex[:6]}",
        fetch_max_bytes=4 * 1024 * 1024,
        max_partition_fetch_bytes=2 * 1024 * 1024,
    )
    await consumer.start()
    seen: list[tuple[bytes, bytes]] = []
    try:

        async def all_arrived() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend((r.key or b"", r.value or b"") for r in batch)
            return len(seen) >= count

        await eventually(all_arrived, what=f"{count} records")
    finally:
        await consumer.stop()
    return seen


async def test_a_backlog_written_at_once_is_read_through_the_index_not_sorted(
    database: DatabaseSettings,
) -> None:
    """A transaction writing many rows into an outbox analysed while it was empty (a rescore's
    100,000) leaves the planner expecting a few. The relay's read must still walk the unsent
    index in id order rather than sort every unsent row for each batch it reads."""
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t"
    )

    async def never(messages: Sequence[OutboxMessage]) -> None:
        raise AssertionError("nothing is published here")

    try:
        relay = OutboxRelay(pool, "scoring", never)
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE outbox")
            async with conn.transaction():
                await outbox.add(
                    conn,
                    [
                        OutboxMessage("t", f"retail/jira/P{i}".encode(), b"v" * 600, {})
                        for i in range(5000)
                    ],
                )
            explain = f"EXPLAIN (FORMAT JSON) {outbox.UNSENT}"
            # The situation is real: left to itself the planner sorts the backlog.
            unguided = json.loads(await conn.fetchval(explain, 0, 2000, 4 << 20))
            assert await relay.take_turn(conn)
            plan = json.loads(await conn.fetchval(explain, 0, 2000, 4 << 20))
            await relay.give_turn(conn)
    finally:
        await pool.close()

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    assert "Sort" in [n["Node Type"] for n in nodes(unguided[0]["Plan"])]
    steps = list(nodes(plan[0]["Plan"]))
    # The running byte count (WindowAgg) streams in the index's order, and the limit stops it.
    assert [n["Node Type"] for n in steps] == [
        "Subquery Scan",
        "Limit",
        "WindowAgg",
        "Index Scan",
    ], steps
    assert steps[3]["Index Name"] == "outbox_unsent"


async def test_marks_find_their_rows_through_the_key_from_an_empty_outbox(
    database: DatabaseSettings,
) -> None:
    """A session plans a prepared statement for its first five runs, then keeps a generic plan
    for as long as it lives. Planned while the outbox held a few rows, the mark's was a
    sequential scan, and each pass after it read every row kept to mark a few (in the
    benchmark's database, filling from empty, about as many rows read as written a second).
    Twenty passes of one relay session from an empty outbox: no statement of it scans the
    outbox."""
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t", max_size=1
    )

    async def accept(messages: Sequence[OutboxMessage]) -> None:
        return None

    scans_of_outbox = (
        "SELECT seq_scan, idx_scan, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'outbox'"
    )
    try:
        # Building the outbox's indexes scanned it: what the migrations did is the baseline.
        before = await pool.fetchrow(scans_of_outbox)
        relay = OutboxRelay(pool, "scoring", accept)
        for i in range(20):
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(
                    conn,
                    [
                        OutboxMessage("t", b"retail/jira/P", f"{i}:{j}".encode(), {})
                        for j in range(3)
                    ],
                )
            assert await relay.relay_once() == 3
        async with pool.acquire() as conn:  # the relay's session: the pool's one connection
            await conn.execute("SELECT pg_stat_force_next_flush()")
            after = await conn.fetchrow(scans_of_outbox)
    finally:
        await pool.close()
    assert before is not None
    assert after is not None
    assert after["n_tup_upd"] - before["n_tup_upd"] == 60  # every row marked
    assert after["idx_scan"] > before["idx_scan"]
    assert after["seq_scan"] == before["seq_scan"], (before, after)


async def test_one_relay_of_a_schema_publishes_and_the_other_takes_over_when_it_stops(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    """Two replicas' relays of one schema: the one holding the turn publishes everything, the
    other publishes nothing until the first stops, and then everything. Stopped, both leave
    their connections to the pool with no lock held and no setting changed."""
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t", max_size=3
    )
    topic = TopicNames(kafka.topic_prefix)(Topic.SCORES)
    producer = make_producer(kafka, client_id="outbox-test")
    send = producer_publish(producer)
    by: dict[str, list[bytes]] = {"first": [], "second": []}

    def recording(name: str) -> outbox.Publish:
        async def publish(messages: Sequence[OutboxMessage]) -> None:
            await send(messages)
            by[name].extend(m.value for m in messages)

        return publish

    first = OutboxRelay(pool, "scoring", recording("first"), poll_interval=0.05)
    second = OutboxRelay(pool, "scoring", recording("second"), poll_interval=0.05)

    async def add(values: range) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(
                conn, [OutboxMessage(topic, b"retail/jira/P", f"{i}".encode(), {}) for i in values]
            )

    async def all_sent() -> bool:
        return (await first.backlog())[0] == 0

    async def session(conn: Any) -> dict[str, Any]:
        """What the relay changes in a session: its lock and settings."""
        state = await conn.fetchrow(
            "SELECT current_setting('enable_sort') AS sort,"
            " current_setting('enable_seqscan') AS seqscan,"
            " current_setting('synchronous_commit') AS commit,"
            " current_setting('tcp_keepalives_idle') AS keepalives_idle,"
            " current_setting('tcp_keepalives_interval') AS keepalives_interval,"
            " current_setting('tcp_keepalives_count') AS keepalives_count,"
            " current_setting('tcp_user_timeout') AS user_timeout,"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            "  AND pid = pg_backend_pid()) AS locks"
        )
        assert state is not None
        return dict(state)

    async with pool.acquire() as conn:
        untouched = await session(conn)
        assert await first.take_turn(conn)
        # Set while the turn is held (over TCP; over a Unix socket keepalives read 0 anyway).
        held = await session(conn)
        await first.give_turn(conn)
    assert (held["sort"], held["seqscan"], held["commit"], held["locks"]) == (
        "off",
        "off",
        "off",
        1,
    )
    if untouched["keepalives_idle"] != "0":
        assert held["keepalives_idle"] == str(outbox.KEEPALIVES[0])
        assert held["user_timeout"] == str(outbox.USER_TIMEOUT_MS)
    assert untouched["locks"] == 0

    await producer.start()
    try:
        running_first = asyncio.create_task(first.run())
        await add(range(5))
        await eventually(all_sent, what="the first rows sent")
        running_second = asyncio.create_task(second.run())
        try:
            for start in (5, 10):  # the second relay polls and is woken meanwhile
                await add(range(start, start + 5))
                await eventually(all_sent, what="rows sent while both run")
                await asyncio.sleep(0.2)
            await _stop(running_first)
            await add(range(15, 20))
            await eventually(all_sent, within=10, what="rows sent by the relay taking over")
        finally:
            await _stop(running_first)
            await _stop(running_second)
        values = [f"{i}".encode() for i in range(20)]
        assert by == {"first": values[:15], "second": values[15:]}
        connections = [await pool.acquire() for _ in range(3)]
        try:
            for conn in connections:
                assert await session(conn) == untouched
        finally:
            for conn in connections:
                await pool.release(conn)
    finally:
        await producer.stop()
        await pool.close()
    assert [v for _, v in await consume(kafka, topic, 20)] == values


async def test_a_waiting_relay_asks_for_the_turn_once_a_poll_not_at_every_commit(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    """Every commit that writes outbox rows notifies every replica's relay. The one waiting for
    the turn asks for it again at most once a poll interval, however many commits the holder
    publishes meanwhile (each notification had cost it a round trip), and takes over within a
    poll interval once the holder stops."""
    asked: list[float] = []

    class Waiting(OutboxRelay):
        async def take_turn(self, conn: Any) -> bool:
            asked.append(asyncio.get_running_loop().time())
            return await super().take_turn(conn)

    async with _two_relays(database, kafka) as (pool, topic, send, running):
        holder = OutboxRelay(pool, "scoring", send, poll_interval=0.05)
        waiting = Waiting(pool, "scoring", send, poll_interval=0.5)

        async def all_sent() -> bool:
            return (await holder.backlog())[0] == 0

        running.append(await _holding_the_turn(holder, "the first relay holding the turn"))
        running.append(asyncio.create_task(waiting.run()))
        started = asyncio.get_running_loop().time()
        for i in range(30):  # thirty commits, each notified, over about 1.5 s
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, [OutboxMessage(topic, b"retail/jira/P", b"%d" % i, {})])
            await asyncio.sleep(0.05)
        await eventually(all_sent, what="the holder's rows sent")
        during = len(asked)
        elapsed = asyncio.get_running_loop().time() - started
        await _stop(running[0])
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [OutboxMessage(topic, b"retail/jira/P", b"after", {})])
        await eventually(all_sent, within=5, what="the row sent by the relay taking over")
    assert 1 <= during <= elapsed / 0.5 + 2, (during, elapsed)
    assert waiting._holder is None  # stopped: its turn given back with its connection


async def test_a_relay_that_cannot_publish_gives_its_turn_to_one_that_can(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    """A replica cut off from the broker holds the turn only until its pass fails: the other
    replica's relay takes over and publishes, and the first keeps failing without it."""
    attempts: list[int] = []
    published: list[bytes] = []

    async def cut_off(messages: Sequence[OutboxMessage]) -> None:
        attempts.append(len(messages))
        raise ConnectionError("this replica cannot reach the broker")

    async with _two_relays(database, kafka) as (pool, topic, send, running):

        async def reaching(messages: Sequence[OutboxMessage]) -> None:
            await send(messages)
            published.extend(m.value for m in messages)

        broken = OutboxRelay(pool, "scoring", cut_off, poll_interval=0.05)
        healthy = OutboxRelay(pool, "scoring", reaching, poll_interval=0.05)
        running.append(await _holding_the_turn(broken, "the cut-off relay holding the turn"))
        running.append(asyncio.create_task(healthy.run()))
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [OutboxMessage(topic, b"retail/jira/P", b"1", {})])

        async def all_sent() -> bool:
            return (await broken.backlog())[0] == 0

        await eventually(all_sent, within=20, what="the row sent by the relay that can")
    assert attempts, "the cut-off relay had the turn and tried"
    assert broken.stats.failures >= 1
    assert published == [b"1"]


async def test_a_pass_cancelled_while_it_publishes_leaves_nothing_held(
    database: DatabaseSettings,
) -> None:
    """``relay_once`` on its own, cancelled mid-pass (a shutdown's timeout): its connection
    goes back to the pool, or is closed, with no lock and no setting of the relay's."""
    await migrate(database.url, [service_component("scoring")])
    pool = await create_pool(
        service_url(database, "scoring"), schema="scoring", application_name="t", max_size=1
    )
    publishing = asyncio.Event()

    async def hangs(messages: Sequence[OutboxMessage]) -> None:
        publishing.set()
        await asyncio.sleep(60)

    try:
        relay = OutboxRelay(pool, "scoring", hangs)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [OutboxMessage("t", b"retail/jira/P", b"1", {})])
        passing = asyncio.create_task(relay.relay_once())
        await publishing.wait()
        await _stop(passing)
        async with pool.acquire() as conn:  # the one connection, or a new one
            state = await conn.fetchrow(
                "SELECT current_setting('enable_sort') AS sort,"
                " current_setting('enable_seqscan') AS seqscan,"
                " current_setting('synchronous_commit') AS commit,"
                " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                "  (SELECT oid FROM pg_database WHERE datname = current_database())) AS locks"
            )
        assert state is not None
        assert dict(state) == {"sort": "on", "seqscan": "on", "commit": "on", "locks": 0}
        assert (await relay.backlog())[0] == 1, "nothing marked"
    finally:
        await pool.close()


async def test_a_unit_of_work_that_commits_rows_wakes_its_own_processs_relay_at_once(
    database: DatabaseSettings,
) -> None:
    """Without the notification's round trip through Postgres: no relay here listens."""
    await migrate(database.url, [service_component("scoring")])
    url = service_url(database, "scoring")
    pools = [await create_pool(url, schema="scoring", application_name="t") for _ in range(2)]

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        raise AssertionError("nothing is published here")

    ours, other = (OutboxRelay(pool, "scoring", publish) for pool in pools)
    message = OutboxMessage("t", b"k", b"v", {"ce_id": "e1"})
    try:
        async with PostgresUnitOfWork(pools[0]) as uow:
            await uow.emit([])
        assert not ours._wake.is_set()  # nothing was written

        async def rolled_back() -> None:
            async with PostgresUnitOfWork(pools[0]) as uow:
                await uow.emit([message])
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await rolled_back()
        assert not ours._wake.is_set()  # nothing was committed
        async with PostgresUnitOfWork(pools[0]) as uow:
            await uow.emit([message])
        assert ours._wake.is_set()
        assert not other._wake.is_set()  # another pool's (another schema's) relay sleeps on
    finally:
        for pool in pools:
            await pool.close()
