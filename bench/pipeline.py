"""The pipeline row of ``make bench``: submissions per second from the inbound topic to
committed rows in reporting's read model, through the four services running as separate
processes, with each service's peak memory and the CPU one submission costs in each process
(the services, the broker, Postgres, the load generator) and in whatever else ran."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from bench.cpu import CpuMeter, CpuUse, broker_pids, postgres_pids
from bench.harness import Stack, encoded_submissions, service_stack
from services.intake.duplicates import INBOX_PREFIX as DUPLICATE_SEARCH_PREFIX
from shared.asyncapi import CHANNELS
from shared.contracts.events import DuplicatesFound, PlansChanged, ProjectsChanged, ScoresChanged
from shared.migrations import SERVICES
from shared.topics import Topic


@dataclass(frozen=True, slots=True)
class PipelineResult:
    per_second: float
    events_per_second: float  # records applied by all four services together
    # The same, with each record of many projects (ProjectsChanged, ScoresChanged, PlansChanged)
    # counted once per project it carries: the project events applied, as when every project's
    # was a record of its own.
    project_events_per_second: float
    peak_rss_mb: dict[str, float]
    # CPU milliseconds per submission by process group; "other" is what the machine spent
    # beside them (other work on a shared machine), so the groups add up to its busy time.
    cpu_ms: dict[str, float]
    machine_busy: float  # busy share of all cores while the row ran, 0..1
    events_per_commit: float  # records applied by the services per transaction they committed
    # Records each service published per submission (its outbox rows): the fan-out that
    # every consuming service then pays for.
    published: dict[str, float]

    @property
    def cpu_ceiling(self) -> float:
        """Submissions per second the cores allow at this CPU cost per submission, were the
        pipeline's processes alone on the machine and every core busy."""
        own = own_ms(self.cpu_ms)
        return (os.cpu_count() or 1) * 1000 / own if own else 0.0


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _commits(conn: asyncpg.Connection, database: str) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    value: int = await conn.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database
    )
    return value


# Events that carry many projects each, with the service writing them, the field listing the
# projects, each service that reads them, and what that reader's inbox ids put before the
# event's id (intake's duplicate search reads intake's own changes back under ids of its own).
BATCHED_READS: tuple[tuple[type[BaseModel], str, str, str, str], ...] = tuple(
    (
        event,
        writer,
        field,
        reader,
        DUPLICATE_SEARCH_PREFIX if (writer, reader) == ("intake", "intake") else "",
    )
    for event, writer, field in (
        (ProjectsChanged, "intake", "changes"),
        (DuplicatesFound, "intake", "projects"),
        (ScoresChanged, "scoring", "scores"),
        (PlansChanged, "capacity", "plans"),
    )
    for reader in next(c.readers for c in CHANNELS if c.payload is event)
)


async def entries_beyond_records(conn: asyncpg.Connection) -> int:
    """Project events the services applied beyond the records they consumed: each
    ``ProjectsChanged``, ``DuplicatesFound``, ``ScoresChanged`` or ``PlansChanged`` record
    carries many projects, and each reader of its topic that applied the record (its id is in
    the reader's inbox) applied every one. One statement per reader (``BATCHED_READS``)."""
    beyond = 0
    for event, writer, field, reader, prefix in BATCHED_READS:
        extra = await conn.fetchval(
            f"SELECT coalesce(sum(json_array_length("
            f"convert_from(o.value, 'UTF8')::json -> '{field}') - 1), 0)"
            f" FROM {writer}.outbox o JOIN {reader}.inbox i"
            f" ON i.event_id = $2 || (o.headers ->> 'ce_id') WHERE o.headers ->> 'ce_type' = $1",
            event.TYPE,  # type: ignore[attr-defined]
            prefix,
        )
        beyond += int(extra)
    return beyond


async def published_per_submission(conn: asyncpg.Connection, submissions: int) -> dict[str, float]:
    """Outbox rows each service wrote (sent rows are kept), per submission."""
    out = {}
    for s in SERVICES:
        rows = await conn.fetchval(f"SELECT count(*) FROM {s}.outbox")
        out[s] = rows / submissions
    return out


def _just(pid: int) -> Callable[[], list[int]]:
    return lambda: [pid]


# The meter's groups that are not a service's process.
NOT_SERVICES = ("broker", "postgres", "load generator")


def stack_meter(stack: Stack, bootstrap: str, database: str) -> CpuMeter:
    """CPU of each service process, the broker, the database's Postgres processes and this
    (the load generating) process."""
    return CpuMeter(
        {
            **{s: _just(p.pid) for s, p in stack.processes.items()},
            "broker": lambda: broker_pids(bootstrap),
            "postgres": lambda: postgres_pids(database),
            "load generator": _just(os.getpid()),
        }
    )


def own_ms(cpu_ms: dict[str, float]) -> float:
    """The CPU a submission cost the measured processes (``per_submission_ms``'s groups but
    "other", what the machine spent beside them)."""
    return sum(v for k, v in cpu_ms.items() if k != "other")


def per_submission_ms(use: CpuUse, submissions: int) -> dict[str, float]:
    """CPU milliseconds per submission by group; "other" is what the machine spent beside
    them (other work on a shared machine), so the groups add up to its busy time."""
    cpu = dict(use.seconds)
    cpu["other"] = max(0.0, use.machine_busy * use.elapsed_cores_seconds - use.total)
    return {k: v * 1000 / submissions for k, v in cpu.items()}


async def searched(conn: asyncpg.Connection, topic: str, projects: int) -> bool:
    """Whether intake's duplicate search has answered for ``projects`` projects and reporting
    has taken every answer. An answer that found none changes nothing in reporting's read
    model (services/reporting/handlers.py, ``_duplicates``), so it is found where it was
    published, intake's outbox (kept there once sent, for longer than a row runs), and in
    reporting's inbox, which claims every record it takes."""
    row = await conn.fetchrow(
        "WITH found AS (SELECT headers->>'ce_id' AS event_id,"
        " convert_from(value, 'UTF8')::jsonb -> 'projects' AS entries"
        " FROM intake.outbox WHERE topic = $1)"
        " SELECT (SELECT count(DISTINCT e->>'project_key')"
        "  FROM found, jsonb_array_elements(found.entries) AS e) AS answered,"
        " (SELECT count(*) FROM found WHERE NOT EXISTS"
        "  (SELECT FROM reporting.inbox i WHERE i.event_id = found.event_id)) AS untaken",
        topic,
    )
    assert row is not None
    return bool(row["answered"] >= projects and row["untaken"] == 0)


async def pipeline(bootstrap: str, server_url: str, submissions: int = 20_000) -> PipelineResult:
    async with service_stack(bootstrap, server_url) as stack:
        conn = await asyncpg.connect(stack.url)
        try:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
            await producer.start()
            topic = stack.topics(Topic.SUBMISSIONS)
            database = await conn.fetchval("SELECT current_database()")
            commits_before = await _commits(conn, database)
            encoded = encoded_submissions(submissions)
            meter = stack_meter(stack, bootstrap, database)
            meter.start()
            started = time.perf_counter()
            futures = []
            for sent in encoded:
                futures.append(await producer.send(topic, sent.value, key=sent.key))
            await asyncio.gather(*futures)
            await producer.stop()
            polls = 0
            while True:
                polls += 1
                # Done when every submission is scored, ranked and planned, searched for
                # possible duplicates with the answers applied, and the ranks have settled
                # (docs/scoring.md): no two projects of a portfolio share one.
                # The observer's own statements run on the Postgres the row meters: counting
                # is a scan, and the rest (a sort, the searches' records) is looked at only
                # once every row is there.
                done = await conn.fetchval(
                    "SELECT count(*) FROM reporting.projects WHERE revision IS NOT NULL"
                    " AND rank IS NOT NULL AND plan_status IS NOT NULL"
                )
                if done < submissions:
                    stack.check_running()
                    await asyncio.sleep(0.2)
                    continue
                polls += 1  # each statement is a transaction of its own
                if not await conn.fetchval(
                    "SELECT count(rank) - count(DISTINCT (portfolio, rank)) FROM reporting.projects"
                ):
                    polls += 1
                    if await searched(conn, stack.topics(Topic.DUPLICATES), submissions):
                        break
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - started
            use = meter.stop()
            cpu_ms = per_submission_ms(use, submissions)
            applied = 0
            for s in SERVICES:
                applied += await conn.fetchval(f"SELECT count(*) FROM {s}.inbox")
            beyond = await entries_beyond_records(conn)
            peaks = {s: _peak_rss_mb(p.pid) for s, p in stack.processes.items()}
            # The services' commits: the statistics arrive within a second of each commit.
            # This connection's own, each a transaction: the first reading's, the polls, the
            # inbox counts, the batched events' entries, and the next reading's clearing of its
            # snapshot.
            await asyncio.sleep(1.5)
            own = 1 + polls + len(SERVICES) + len(BATCHED_READS) + 1
            commits = await _commits(conn, database) - commits_before - own
            # Reporting's warehouse records trail the read model by their marks' delays: count
            # the records published once the marks have gone out (up to 10 s), so that a longer
            # delay is not counted as fewer records. The clock, the CPU meter and the commits
            # were taken above.
            drained = time.perf_counter() + 10
            while time.perf_counter() < drained:
                if not await conn.fetchval("SELECT count(*) FROM reporting.warehouse_pending"):
                    break
                await asyncio.sleep(0.2)
            published = await published_per_submission(conn, submissions)
            return PipelineResult(
                submissions / elapsed,
                applied / elapsed,
                (applied + beyond) / elapsed,
                peaks,
                cpu_ms,
                use.machine_busy,
                applied / max(1, commits),
                published,
            )
        finally:
            await conn.close()
