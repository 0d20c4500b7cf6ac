"""Batch consumption with an explicit acknowledgement policy.

One consumed batch is one database transaction (the handler's), and offsets are committed only
after it commits: at most every ``commit_interval_ms`` (``OffsetCommits``), since the inbox
makes a record delivered again a no-op. Failures are classified:

* transient (database or broker unavailable): retried with capped exponential backoff; when the
  retry budget runs out, the batch's partitions are rewound so Kafka delivers it again;
* anything else escaping a handler: the batch is bisected until the single record that fails is
  found, and that record is dead-lettered with the error as its reason, so one poison record
  never blocks a partition and never takes good records down with it.

Handlers dead-letter records they refuse themselves (validation), inside their transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import OffsetAndMetadata
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from shared import logs, metrics, tracing
from shared.consumer_record import Record
from shared.errors import Reason, TransientError, is_transient
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[Record]], Awaitable[None]]
PoisonHandler = Callable[[Record, list[Reason]], Awaitable[None]]


class RetryExhausted(TransientError):
    """Transient failures outlasted the retry budget; the batch goes back to Kafka."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_seconds: float = 0.05
    max_seconds: float = 5.0
    budget_seconds: float = 120.0


class BatchRunner:
    """Runs a service's batch handler with the failure policy described above."""

    def __init__(
        self,
        service: str,
        handle: BatchHandler,
        poison: PoisonHandler,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._service = service
        self._handle = handle
        self._poison = poison
        self._retry = retry

    async def process(self, records: Sequence[Record]) -> None:
        if not records:
            return
        try:
            await self._retrying(self._handle, records)
        except RetryExhausted:
            raise
        except Exception as exc:  # noqa: BLE001 - classified: isolated and dead-lettered below
            await self._isolate(records, exc)

    async def _isolate(self, records: Sequence[Record], exc: Exception) -> None:
        if len(records) > 1:
            middle = len(records) // 2
            await self.process(records[:middle])
            await self.process(records[middle:])
            return
        record = records[0]
        log.error(
            "record %s cannot be processed; dead-lettering it",
            record.coordinates,
            exc_info=exc,
        )
        reason = Reason(
            code="processing_error", message=f"{type(exc).__name__}: {exc}"[:1000], path=""
        )
        metrics.DEAD_LETTERS.labels(self._service, reason.code).inc()
        await self._retrying(self._poison, record, [reason])

    async def _retrying(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        delay = self._retry.initial_seconds
        deadline = time.monotonic() + self._retry.budget_seconds
        while True:
            try:
                await fn(*args)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise RetryExhausted(f"gave up after {self._retry.budget_seconds}s") from exc
                metrics.RETRIES.labels(self._service).inc()
                log.warning("transient failure, retrying in %.2fs: %r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry.max_seconds)
            else:
                return


class OffsetCommits(ConsumerRebalanceListener):  # type: ignore[misc]
    """A consumer's offsets, committed after its batches' transactions but not after each one.

    Committing is a request to the broker and a wait for its answer, in the consumer's loop
    before it takes its next batch. Under a steady feed a service takes tens of batches a
    second, and a commit after each cost the broker a request and the consumer a round trip
    each time (docs/performance.md). A record delivered again is a no-op for its consumer (the
    inbox), so committing less often changes only how much is delivered again after a crash,
    at most ``interval`` seconds' worth, and how far behind the group's committed offsets
    (the lag the broker reports) may read.

    - ``processed(records)``, once a batch's transaction has committed, notes where each of its
      partitions now stands, and commits them all when ``interval`` has passed since the last
      commit; otherwise a timer commits them when it has, so an idle consumer's offsets catch
      up too. An interval of 0 commits after every batch.
    - A rebalance commits the offsets of the partitions it takes away first (the listener's
      ``on_partitions_revoked``), and a graceful stop commits everything (``close``), so
      neither delivers anything again.
    - Commits are serialised, each with every offset noted so far, so a later one never
      moves a partition back. A commit the group refuses (a rebalance took the partitions)
      drops those offsets: the partitions' new owner starts from the last committed ones and
      its inbox skips what was done. Any other failure keeps them for the next commit."""

    def __init__(self, consumer: Callable[[], Any], interval: float, service: str) -> None:
        self._consumer = consumer
        self._interval = interval
        self._service = service
        self._pending: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._last = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._closing = False

    async def processed(self, records: Sequence[Record]) -> None:
        for record in records:
            self._pending[TopicPartition(record.topic, record.partition)] = record.offset + 1
        due = self._last + self._interval - time.monotonic()
        if self._closing or due <= 0:
            await self._commit_or_keep()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(due, self._commit_later)

    def _commit_later(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self._commit_or_keep())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _commit_or_keep(self) -> None:
        try:
            await self.commit()
        except kafka_errors.KafkaError as exc:
            # Kept: the next batch's commit, the timer's or the stop's sends them again.
            log.warning("could not commit offsets, kept for the next commit: %r", exc)

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit the offsets noted so far (only those of ``partitions`` when given). Offsets
        of partitions the consumer no longer has are dropped: their new owner's inbox skips
        what was done."""
        async with self._lock:
            self._last = time.monotonic()
            consumer = self._consumer()
            if consumer is None:
                return
            assigned = consumer.assignment()
            for tp in [tp for tp in self._pending if tp not in assigned]:
                del self._pending[tp]
            offsets = {
                tp: OffsetAndMetadata(offset, "")
                for tp, offset in self._pending.items()
                if partitions is None or tp in partitions
            }
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except kafka_errors.CommitFailedError as exc:
                # The group rebalanced meanwhile, and these partitions may be another's now.
                log.info("offsets not committed, the group rebalanced: %r", exc)
            metrics.OFFSET_COMMITS.labels(self._service).inc()
            for tp, meta in offsets.items():
                if self._pending.get(tp) == meta.offset:  # nothing newer noted meanwhile
                    del self._pending[tp]

    async def close(self) -> None:
        """Commit what is noted, and from now on after every batch (the consumer is stopping).
        A commit that fails is logged, and the stop goes on: what the next owner of the
        partitions is delivered again, its inbox skips."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._commit_or_keep()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.commit(set(revoked))
        except kafka_errors.KafkaError as exc:
            # The rebalance goes on; the partitions' next owner delivers these records again.
            log.warning("could not commit the offsets of revoked partitions: %r", exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


async def _tolerant_parser(message: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream decodes every header as UTF-8 and would fail on a malformed record before
    our code saw it. Batches parse as they are; only a batch with an undecodable (or null)
    header is parsed from sanitised copies, keeping the untouched records for our handlers."""
    try:
        return await original(message)
    except (UnicodeDecodeError, AttributeError):
        pass

    def clean(record: Any) -> Any:
        headers = []
        for key, value in record.headers or ():
            try:
                (value or b"").decode()
            except UnicodeDecodeError:
                value = b""
            headers.append((key, value or b""))
        return dataclasses.replace(record, headers=headers)

    parsed = await original(tuple(clean(r) for r in message))
    parsed.raw_message = message
    return parsed


async def _message_as_body(message: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """The batch's message itself is the handler's argument. Bodies are decoded by our
    handlers, record by record, so a bad one is dead-lettered rather than failing the batch
    inside the framework. And the handler does not ask FastStream's context for the message:
    fast_depends resolves a context field with a synchronous call, which it runs on a worker
    thread, a thread hop for every batch (about 6 % of intake's time under a steady feed).
    A weak proxy: the message caches what its decoder returned, and the message itself there
    would make a cycle that keeps every batch's records until a full garbage collection."""
    return weakref.proxy(message)


async def _record_lag(consumer: Any, service: str) -> None:
    """Lag per assigned partition: the end of the partition as last fetched, minus where this
    consumer stands. (A KEDA scaler reads the group's lag from the broker; this is for
    dashboards and alerts.)"""
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        position = await consumer.position(tp)
        metrics.CONSUMER_LAG.labels(service, tp.topic, str(tp.partition)).set(
            max(0, end - position)
        )


_COMMITS: weakref.WeakKeyDictionary[Any, OffsetCommits] = weakref.WeakKeyDictionary()


def offset_commits(subscriber: Any) -> OffsetCommits | None:
    """The offsets of a subscriber ``subscribe`` registered (None for any other)."""
    return _COMMITS.get(subscriber)


def subscribe(
    broker: KafkaBroker,
    topics: Sequence[str],
    *,
    settings: ServiceSettings,
    runner: BatchRunner,
    service: str,
    traces: tracing.Tracing | None = None,
    lane: str | None = None,
) -> None:
    """Register ``runner`` as the batch consumer of ``topics`` in the service's group.

    Ack policy is MANUAL on purpose: FastStream's default commits before processing, and ACK
    commits after a failure too. Here the offset is committed only after the handler's
    transaction has committed (``OffsetCommits``, at most every ``commit_interval_ms``), and
    rewound when the batch could not be processed.

    A service may register several consumers of its group, each for its own topics (``lane``
    names the ones beside the first; see ``shared.runtime.assemble``).

    With ``traces`` enabled, each batch is processed inside its span (see shared.tracing)."""
    traces = traces or tracing.Tracing(service, None)
    # The first consumer is "main"; one beside it is named by its lane (its topic).
    batch_seconds = metrics.BATCHES.labels(service, lane or "main")
    commits = OffsetCommits(
        lambda: subscriber.consumer, settings.commit_interval_ms / 1000, service
    )
    subscriber = broker.subscriber(
        *topics,
        group_id=settings.group_id,
        batch=True,
        max_records=settings.max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        fetch_min_bytes=settings.fetch_min_bytes,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        parser=_tolerant_parser,
        decoder=_message_as_body,
        max_poll_interval_ms=int((settings.retry_max_seconds + 60) * 1000),
        title=f"{service}:consume" + (f":{lane}" if lane else ""),
        listener=commits,
    )
    _COMMITS[subscriber] = commits
    _take_records_as_they_arrive(subscriber, fetch_ahead=settings.fetch_ahead)

    @subscriber
    async def consume(message: Any) -> None:
        records = [Record.from_kafka(r) for r in message.raw_message]
        first, last = records[0], records[-1]
        logs.correlation_id.set(
            f"{first.topic}/{first.partition}/{first.offset}-{last.offset}"
            + (f" {first.header('ce_id')}" if first.header("ce_id") else "")
        )
        started = time.perf_counter()
        with traces.batch(records, group=settings.group_id) as span:
            try:
                await runner.process(records)
            except RetryExhausted:
                metrics.REWINDS.labels(service).inc()
                log.warning("retries exhausted; rewinding %d records for redelivery", len(records))
                tracing.failed(span, "retries exhausted; rewound for redelivery")
                await message.nack()
                return
        await commits.processed(records)
        batch_seconds.observe(time.perf_counter() - started)
        await _record_lag(message.consumer, service)
        for record in records:
            metrics.RECORDS.labels(service, record.topic).inc()


def _take_records_as_they_arrive(subscriber: Any, *, fetch_ahead: bool = False) -> None:
    """Make ``subscriber``'s loop wait for its next batch in ``getmany`` alone, and, unless
    ``fetch_ahead``, fetch its next batch only when it asks for it.

    FastStream's batch subscriber (0.7) asks ``getmany`` for records, which returns as soon as
    the consumer's background fetch brings any, or after ``batch_timeout_ms`` with none; after
    an empty answer it then sleeps another ``batch_timeout_ms``, and records that arrive in
    that sleep wait it out. A loop fed now and then often finds nothing in one wait and sleeps
    through the next record: it added about 10 ms to the median at a trickle, over the two hops
    of a submission's path (docs/performance.md). Here an empty answer is followed by the next
    ``getmany`` at once: an idle loop still wakes once every ``batch_timeout_ms`` (at least 1
    ms, ``ServiceSettings``), and a record is taken when it arrives.

    aiokafka's consumer fetches ahead: as a batch is taken it asks the broker for more, keeps
    the records of the first answer that has any, and asks that broker for nothing more until
    the loop takes them. Under a steady feed that answer comes early in the batch's processing,
    with the few records published by then, and those published later in it wait in the broker
    for the batch after next: a whole batch's time more on every hop. So a batch's partitions
    are paused once it is taken and resumed when the loop asks again; the fetch then made
    brings everything published while the batch was processed, a round trip later
    (docs/performance.md). A full batch (``max_records``) leaves them fetching: records are
    waiting anyway, and a pause would drop those fetched beyond the batch, to be fetched
    again."""
    timeout_ms: int = subscriber.batch_timeout_ms
    max_records: int | None = subscriber.max_records

    async def get_msg(consumer: Any) -> tuple[Any, ...]:
        batches = await next_batch(
            consumer, timeout_ms=timeout_ms, max_records=max_records, fetch_ahead=fetch_ahead
        )
        return tuple(chain.from_iterable(batches.values()))

    subscriber.get_msg = get_msg


async def next_batch(
    consumer: AIOKafkaConsumer,
    *,
    timeout_ms: int,
    max_records: int | None,
    fetch_ahead: bool = False,
) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
    """``consumer.getmany``, with the partitions paused between batches unless ``fetch_ahead``
    (``_take_records_as_they_arrive``): resumed as the next batch is asked for, paused once a
    batch that is not full has been taken. Only this pauses a loop's consumer."""
    if paused := consumer.paused():
        consumer.resume(*paused)
    batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = await consumer.getmany(
        timeout_ms=timeout_ms, max_records=max_records
    )
    # Before the consumer's background fetch runs again: nothing awaits in between.
    if batches and not fetch_ahead and sum(map(len, batches.values())) != max_records:
        consumer.pause(*consumer.assignment())
    return batches


# ----------------------------------------------------------------------------------------------
# Leaving the group on a graceful stop.


@dataclass(frozen=True, slots=True)
class Membership:
    """Who a consumer is in its group, read before it stops (stopping forgets it)."""

    group_id: str
    member_id: str
    generation: int
    coordinator: int


def membership(subscriber: Any) -> Membership | None:
    """The group membership of a started FastStream subscriber's consumer, or None when it has
    none (not started, no group, or between generations)."""
    coordinator: Any = getattr(getattr(subscriber, "consumer", None), "_coordinator", None)
    member_id = getattr(coordinator, "member_id", "")
    node = getattr(coordinator, "coordinator_id", None)
    if coordinator is None or not member_id or node is None:
        return None
    return Membership(coordinator.group_id, member_id, coordinator.generation, node)


async def leave_first_generation(
    client: AIOKafkaClient, member: Membership, *, within: float = 5.0
) -> None:
    """Leave the group for a member that aiokafka's own stop leaves in it.

    aiokafka sends LeaveGroup on close only from generation 1 on, Kafka's first generation.
    tansu, the embedded broker, numbers its first generation 0, so a replica stopped before
    its group has rebalanced once stayed a member until its session timed out, and the next
    rebalance waited for it: a replacement replica took 18 s to join instead of 5 (measured,
    the dead member even elected leader). Members of later generations left by aiokafka are
    unaffected; an unknown member is a no-op for the broker.

    A best effort, like aiokafka's own: bounded by ``within`` seconds, and a failure is logged,
    not raised (the session timeout still ends the membership), so the stop goes on."""
    if member.generation != 0:
        return
    try:
        async with asyncio.timeout(within):
            response = await client.send(
                member.coordinator, LeaveGroupRequest(member.group_id, member.member_id)
            )
    except (TimeoutError, kafka_errors.KafkaError) as exc:
        log.warning("could not leave group %s: %r", member.group_id, exc)
        return
    error = kafka_errors.for_code(response.error_code)
    if error is not kafka_errors.NoError and error is not kafka_errors.UnknownMemberIdError:
        log.warning("could not leave group %s: %s", member.group_id, error.__name__)
