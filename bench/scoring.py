"""The scoring row of ``make bench``: a full rescore of one large portfolio after a model change,
through the service's own code path (the handler, the unit of work and the repository on real
Postgres), until the transaction has committed the scores, the ranks and the outbox rows.

Only Kafka consumption is left out: the ``SetModel`` command is handed to the handler as the
consumed record it would be. With ``bootstrap`` set, the outbox relay then drains the outbox to
that broker (the publishing half of the outbox), timed separately.

    .venv/bin/python -m bench.scoring                       # 100,000 projects, 3 rounds
    .venv/bin/python -m bench.scoring --normalisation portfolio --broker
    .venv/bin/python -m bench.scoring --revisions fresh     # batches of 3 revised projects
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import asyncpg

from bench.harness import collector_as_served, fresh_database
from services.intake.handlers import projects_changed
from services.scoring.domain.inputs import ScoringInputs
from services.scoring.handlers import ScoringHandler
from services.scoring.repository import ScoringRepository, ScoringUnitOfWork
from shared.consumer_record import Record
from shared.contracts.events import ProjectChanged, ProjectState
from shared.db import create_pool
from shared.settings import role_url
from shared.topics import Topic, TopicNames

PORTFOLIO = "bench"
NOW = datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
NAMES = TopicNames("")
OBJECTIVES = ("growth", "efficiency", "compliance", "customer")
OPEN = ("idea", "proposal", "approved", "active", "on_hold")
CLOSED = ("done", "cancelled", "rejected")


class _Clock:
    """Seconds spent in each kind of I/O, summed over the handler's calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timing(self, what: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - started

    def wrap(self, what: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timing(what):
                return await call(*args, **kwargs)

        return timed


class _TimedRepository:
    """The real repository; every coroutine method's time counts as persistence."""

    def __init__(self, inner: ScoringRepository, clock: _Clock) -> None:
        self._inner = inner
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if asyncio.iscoroutinefunction(attr):
            return self._clock.wrap("persistence", attr)
        return attr


class _TimedUnitOfWork(ScoringUnitOfWork):
    """The service's unit of work, with the time of its I/O recorded by kind."""

    def __init__(self, pool: asyncpg.Pool[Any], clock: _Clock) -> None:
        super().__init__(pool)
        self._clock = clock

    def _bind(self, conn: Any) -> None:
        super()._bind(conn)
        self.projects = _TimedRepository(self.projects, self._clock)  # type: ignore[assignment]

    async def claim(self, event_ids: Any) -> set[str]:
        with self._clock.timing("persistence"):
            return await super().claim(event_ids)

    async def lock(self, *names: str) -> None:
        with self._clock.timing("persistence"):
            await super().lock(*names)

    async def emit(self, messages: Any) -> None:
        self._clock.seconds["published"] = float(len(messages))
        with self._clock.timing("outbox"):
            await super().emit(messages)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._clock.timing("commit"):
            await super().__aexit__(exc_type, exc, tb)


def _project(rnd: random.Random, i: int) -> dict[str, Any]:
    """One synthetic project, as intake would have published its state."""
    project: dict[str, Any] = {
        "name": f"Project {i}",
        "portfolio": PORTFOLIO,
        "source": "jira",
        "external_id": f"P{i:06d}",
        "stage": rnd.choice(OPEN) if rnd.random() < 0.97 else rnd.choice(CLOSED),
        "mandatory": rnd.random() < 0.01,
        "demand": [
            {
                "role": "backend",
                "fte": round(rnd.uniform(0.5, 3), 1),
                "start_month": 0,
                "months": rnd.randint(1, 12),
            }
        ],
    }
    if rnd.random() < 0.9:
        project["value"] = round(10 ** rnd.uniform(4, 8), 2)
    if rnd.random() < 0.9:
        project["cost"] = round(10 ** rnd.uniform(4, 7), 2)
    if rnd.random() < 0.9:
        chosen = rnd.sample(OBJECTIVES, rnd.randint(1, 3))
        project["strategic_fit"] = {o: rnd.randint(0, 5) for o in chosen}
    if rnd.random() < 0.9:
        project["risk"] = rnd.randint(1, 5)
    if rnd.random() < 0.6:
        month = rnd.randint(2026 * 12 + 5, 2029 * 12 + 11)
        project["deadline"] = f"{month // 12:04d}-{month % 12 + 1:02d}"
    if rnd.random() < 0.3:
        project["wsjf"] = {
            "business_value": rnd.randint(1, 20),
            "time_criticality": rnd.randint(1, 20),
            "risk_reduction": rnd.randint(1, 20),
            "job_size": rnd.randint(1, 20),
        }
    return project


def _command(action: str, number: int, **fields: Any) -> Record:
    body = {
        "command_id": str(uuid.UUID(int=number)),
        "portfolio": PORTFOLIO,
        "author": "bench@pmo",
        "issued_at": NOW.isoformat(),
        "action": action,
        **fields,
    }
    return Record(
        topic=NAMES(Topic.SCORING_COMMANDS),
        partition=0,
        offset=number,
        key=PORTFOLIO.encode(),
        value=json.dumps(body).encode(),
        headers=(),
        timestamp_ms=0,
    )


def model_change(normalisation: str) -> Record:
    """The timed command: a new weighted model, the one docs/scoring.md shows."""
    model = {
        "name": "growth-first",
        "model": {
            "method": "weighted",
            "weights": {"strategic_fit": 3, "value_for_money": 2, "risk": 1, "urgency": 1},
            "objectives": {"growth": 2, "efficiency": 1},
            "normalisation": normalisation,
        },
    }
    return _command("set_model", 2, model=model, comment="benchmark model change")


async def load(pool: asyncpg.Pool[Any], projects: int, *, seed: int = 1) -> None:
    """Bulk-load ``projects`` projects of one portfolio, as if they had arrived (same columns
    as the repository's ``save_inputs``), a few overrides, and a first ranking (a rescore
    through the handler, untimed); the outbox is emptied and the tables vacuumed."""
    rnd = random.Random(seed)  # noqa: S311 - synthetic data
    rows = []
    states = []
    for i in range(projects):
        data = _project(rnd, i)
        state = ProjectState.model_validate(data)
        key = f"{PORTFOLIO}/jira/{data['external_id']}"
        p = ScoringInputs.of(key, state, withdrawn=False)
        wsjf = (
            [p.wsjf.business_value, p.wsjf.time_criticality, p.wsjf.risk_reduction, p.wsjf.job_size]
            if p.wsjf
            else None
        )
        states.append((key, state.model_dump_json()))
        rows.append(
            (
                key,
                PORTFOLIO,
                1,
                False,
                p.mandatory,
                p.ranked,
                0.0,
                json.dumps(p.strategic_fit),
                p.value,
                p.cost,
                p.risk,
                p.deadline,
                wsjf,
                p.effort,
            )
        )
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "projects",
            columns=(
                "project_key",
                "portfolio",
                "revision",
                "withdrawn",
                "mandatory",
                "ranked",
                "score",
                "strategic_fit",
                "value",
                "cost",
                "risk",
                "deadline",
                "wsjf",
                "effort",
            ),
            records=rows,
        )
        await conn.copy_records_to_table(
            "project_states", columns=("project_key", "state"), records=states
        )
        # A few analysts' overrides: pins high and low, adjustments both ways.
        overrides = [
            (rows[i * 997][0], "pin", rank, None)
            for i, rank in enumerate((1, 3, 50, 1000, projects // 2))
            if i * 997 < projects
        ] + [
            (rows[i * 1499 + 7][0], "adjust", None, float(rnd.randint(-20, 20)) or 5.0)
            for i in range(50)
            if i * 1499 + 7 < projects
        ]
        await conn.executemany(
            "INSERT INTO overrides (project_key, portfolio, kind, rank, delta, justification,"
            " author, set_at) VALUES ($1, $2, $3, $4, $5, 'benchmark override', 'bench', $6)",
            [(key, PORTFOLIO, kind, rank, delta, NOW) for key, kind, rank, delta in overrides],
        )
    handler = ScoringHandler(lambda: ScoringUnitOfWork(pool), NAMES, lambda: NOW)
    await handler.handle([_command("rescore", 1)])
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM outbox")
        await conn.execute("VACUUM ANALYZE projects")
        await conn.execute("VACUUM ANALYZE outbox")


def revision(number: int, data: dict[str, Any]) -> Record:
    """A new revision (``1 + number``) of a loaded project with inputs ``data``, as intake
    publishes it (a ``ProjectsChanged`` record of one project)."""
    key = f"{PORTFOLIO}/jira/{data['external_id']}"
    event = ProjectChanged(
        project_key=key,
        portfolio=PORTFOLIO,
        revision=1 + number,
        submission_id=str(uuid.UUID(int=number)),
        occurred_at=NOW,
        project=ProjectState.model_validate(data),
    )
    (message,) = projects_changed(NAMES(Topic.PROJECTS), PORTFOLIO, [event], NOW)
    return Record(
        topic=message.topic,
        partition=0,
        offset=number,
        key=message.key,
        value=message.value,
        headers=tuple((k, v.encode()) for k, v in message.headers.items()),
        timestamp_ms=0,
    )


async def revisions(
    server_url: str,
    projects: int = 100_000,
    *,
    fresh: bool = True,
    batches: int = 20,
    size: int = 3,
) -> dict[str, float]:
    """Median seconds (and events published) for the handler to apply a batch of ``size``
    revised projects to a portfolio of ``projects`` and commit: the per-batch path of the
    pipeline. With ``fresh`` the revisions draw new inputs, so their scores and ranks move
    (and every project between a revised one's old and new rank moves with it); without, they
    repeat the loaded inputs and nothing moves, which leaves the cost that does not depend on
    what changed."""
    async with fresh_database(server_url, ["scoring"]) as url:
        pool = await create_pool(
            role_url(url, "pmo_scoring"), schema="scoring", application_name="bench-scoring"
        )
        try:
            await load(pool, projects)
            loaded = random.Random(1)  # noqa: S311 - the loaded projects, drawn again
            data = [_project(loaded, i) for i in range(projects)]
            rnd = random.Random(2)  # noqa: S311 - synthetic data
            seconds, published = [], []
            for b in range(batches):
                clock = _Clock()
                handler = ScoringHandler(
                    functools.partial(_TimedUnitOfWork, pool, clock), NAMES, lambda: NOW
                )
                batch = []
                for i in range(size):
                    index = rnd.randrange(projects)
                    inputs = _project(rnd, index) if fresh else data[index]
                    batch.append(revision(b * size + i + 1, {**inputs, "name": f"Project {index}"}))
                started = time.perf_counter()
                await handler.handle(batch)
                seconds.append(time.perf_counter() - started)
                published.append(clock.seconds.get("published", 0.0))
            return {
                "batch_seconds": statistics.median(seconds),
                "batch_min": min(seconds),
                "batch_max": max(seconds),
                "published_per_batch": statistics.median(published),
            }
        finally:
            await pool.close()


async def _drain(pool: asyncpg.Pool[Any], bootstrap: str) -> tuple[float, int]:
    """Seconds for the outbox relay to publish the whole outbox to the broker at ``bootstrap``,
    and how many rows it published."""
    from shared.admin import ensure_topics
    from shared.broker import make_producer
    from shared.outbox import OutboxRelay, producer_publish
    from shared.settings import KafkaSettings

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    await ensure_topics(kafka)
    # The services' relay, publishing through the services' producer.
    producer = make_producer(kafka, client_id="bench-scoring")
    await producer.start()
    relay = OutboxRelay(pool, "scoring", producer_publish(producer, topic_prefix=prefix))
    try:
        started = time.perf_counter()
        while await relay.relay_once():
            pass
        return time.perf_counter() - started, relay.stats.published
    finally:
        await producer.stop()


async def full_rescore(
    server_url: str,
    projects: int = 100_000,
    *,
    normalisation: Literal["absolute", "portfolio"] = "absolute",
    bootstrap: str | None = None,
) -> dict[str, float]:
    """Seconds for a model change to rescore and re-rank ``projects`` projects of one portfolio
    and commit scores, ranks and outbox rows, on a fresh database of the server at
    ``server_url``; with the breakdown: ``persistence`` (repository, inbox and lock),
    ``outbox`` (writing the outbox rows), ``commit``, and ``domain`` (everything else: scoring,
    ranking, building the events). With ``bootstrap``, ``relay`` is the time the outbox relay
    then takes to publish every row to that broker."""
    async with fresh_database(server_url, ["scoring"]) as url:
        pool = await create_pool(
            role_url(url, "pmo_scoring"), schema="scoring", application_name="bench-scoring"
        )
        try:
            await load(pool, projects)
            clock = _Clock()
            handler = ScoringHandler(lambda: _TimedUnitOfWork(pool, clock), NAMES, lambda: NOW)
            with collector_as_served():
                started = time.perf_counter()
                await handler.handle([model_change(normalisation)])
                total = time.perf_counter() - started
            io = sum(clock.seconds.get(k, 0.0) for k in ("persistence", "outbox", "commit"))
            result = {
                "seconds": total,
                "domain": total - io,
                "persistence": clock.seconds.get("persistence", 0.0),
                "outbox": clock.seconds.get("outbox", 0.0),
                "commit": clock.seconds.get("commit", 0.0),
                "published": clock.seconds.get("published", 0.0),
            }
            if bootstrap is not None:
                with collector_as_served():
                    result["relay"], result["relayed"] = await _drain(pool, bootstrap)
            return result
        finally:
            await pool.close()


async def _main(args: argparse.Namespace) -> None:
    url = os.environ.get("PMO_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    results = []

    async def one(bootstrap: str | None) -> None:
        for _ in range(args.rounds):
            result = await full_rescore(
                url, args.projects, normalisation=args.normalisation, bootstrap=bootstrap
            )
            results.append(result)
            print("  ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)

    if args.revisions:
        for _ in range(args.rounds):
            result = await revisions(url, args.projects, fresh=args.revisions == "fresh")
            results.append(result)
            print("  ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
    elif args.broker:
        from shared.local import free_port, tansu

        with tansu(free_port()) as bootstrap:
            await one(bootstrap)
    else:
        await one(None)
    keys = results[0].keys()
    median = {k: statistics.median(r[k] for r in results) for k in keys}
    print("median  " + "  ".join(f"{k} {v:.3f}" for k, v in median.items()))
    assert all(math.isfinite(v) for v in median.values())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--projects", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--normalisation", choices=("absolute", "portfolio"), default="absolute")
    parser.add_argument("--broker", action="store_true", help="also time the relay to tansu")
    parser.add_argument(
        "--revisions",
        choices=("fresh", "same"),
        help="time batches of 3 revised projects (new inputs, or the loaded ones again)"
        " instead of a full rescore",
    )
    asyncio.run(_main(parser.parse_args()))
