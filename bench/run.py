"""``make bench``: every row the median of three interleaved rounds with their spread, printed
as a table and written to bench-results/bench.json; a row with a target says whether the
median meets it.

Rows: the broker baseline (raw aiokafka produce + consume), single-row commits per second on
this Postgres, the pipeline through the four services (its ratio to the broker, commit
amortisation, events per transaction, peak memory and CPU per submission in each process, and
the ceiling that CPU puts on the rate; bench/pipeline.py, bench/cpu.py), the durable minimum
(what the pipeline's guarantees alone cost per submission, with no domain work, and the ceiling
that puts on any implementation of them; bench/floor.py), freshness (publish ->
visible in the reporting API at half the pipeline's rate, by quarter of the row and by stage of
a submission's path, how long the path's processes and the servers wait for a core for each
second they run, and its ratio to one raw produce -> consume hop; bench/freshness.py),
framework overhead (a FastStream relay / the same relay in aiokafka; bench/relay.py), the
ranking endpoint under 50 clients (bench/api.py), a full rescore
of 100,000 projects after a model change through the service's code, committed and published
(bench/scoring.py), the scoring domain alone, the greedy replan of 1,000 projects x 200 teams x
24 months, the optimiser against the LP bound, and the time to prove a 100-project plan optimal
(bench/optimiser.py).

A full run takes about ten minutes on two cores. ``python -m bench.run --quick`` runs the same
rows with small sizes (to check that they work, not to quote) and writes
bench-results/bench-quick.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.api import reporting_api
from bench.floor import durable_minimum, floor_per_submission
from bench.freshness import STAGES, freshness, hop, idle_cost
from bench.harness import collector_as_served
from bench.optimiser import instance_model, prove_small
from bench.path_floor import path_floor
from bench.pipeline import NOT_SERVICES, PipelineResult, own_ms, pipeline
from bench.relay import framework_overhead
from bench.scoring import full_rescore
from services.capacity.domain.optimiser import heuristics, lp_relaxation, objective_of, solve
from services.capacity.domain.planner import plan
from services.capacity.domain.synthetic import portfolio
from services.scoring.domain.inputs import ScoringInputs
from services.scoring.domain.ranking import RankEntry, rank
from services.scoring.domain.scoring import score_all
from shared.contracts.scoring import DEFAULT_MODEL
from shared.local import embedded_postgres, free_port, tansu

ROUNDS = 3
LOW_RATE = 5.0  # submissions per second for the freshness row's trickle variant
# The freshness row's process groups whose wait for a core is reported: a submission's path
# (intake, reporting's project and API processes) and the shared servers.
WAITED = ("intake", "reporting-projects", "reporting-api", "postgres", "broker")
FLOOR_WAITED = ("hop", "sink")  # the path floor's two processes
PIPELINE_SUBMISSIONS = 5000
PAYLOAD = 1024  # bytes, about a submission's size
CORES = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Sizes:
    pipeline_submissions: int = PIPELINE_SUBMISSIONS
    # Of publishing at half the pipeline's rate; the raw hop runs as long, since what the local
    # broker costs grows with what it has stored (docs/performance.md).
    freshness_seconds: float = 20.0
    relay_messages: int = 30_000
    floor_events: int = 30_000
    api_projects: int = 10_000
    api_clients: int = 50
    api_seconds: float = 8.0  # per endpoint, after a one-second warm-up
    idle_seconds: float = 10.0  # of the four services running with nothing to do
    rescore_projects: int = 100_000


FULL = Sizes()
QUICK = Sizes(
    pipeline_submissions=800,
    freshness_seconds=4.0,
    relay_messages=5_000,
    floor_events=5_000,
    api_seconds=2.0,
    idle_seconds=2.0,
    rescore_projects=5_000,
)


async def broker_baseline(bootstrap: str, messages: int = 50_000) -> float:
    """Raw aiokafka: produce (batched) then consume (getmany) ``messages``; msgs/s end to end."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    await admin.close()
    value = os.urandom(PAYLOAD // 2).hex().encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=topic
    )
    await producer.start()
    await consumer.start()
    try:
        started = time.perf_counter()
        futures = [
            await producer.send(topic, value, key=str(i % 64).encode()) for i in range(messages)
        ]
        await asyncio.gather(*futures)
        seen = 0
        while seen < messages:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                seen += len(records)
        return messages / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


async def single_row_commits(url: str, seconds: float = 3.0) -> float:
    """Committed single-row transactions per second: what one commit per event would cap at.

    Into a logged table of the run's own, dropped after: a transaction that writes only a
    temporary table (unlogged) commits without waiting for its WAL to reach the disk, so it
    measured round trips, not the disk (about a third faster on this machine)."""
    table = f"bench_commit_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE TABLE {table} (id bigint)")
        try:
            count = 0
            deadline = time.perf_counter() + seconds
            started = time.perf_counter()
            while time.perf_counter() < deadline:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} VALUES ($1)", count)
                count += 1
            return count / (time.perf_counter() - started)
        finally:
            await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()


def scoring_100k() -> float:
    """Seconds to score and rank 100,000 projects (the domain part of a full rescore)."""
    rnd = random.Random(1)  # noqa: S311 - synthetic data
    with collector_as_served():
        projects = [
            ScoringInputs(
                f"b/s/P{i}",
                rnd.random() < 0.01,
                True,
                {"growth": rnd.randint(0, 5), "efficiency": rnd.randint(0, 5)},
                rnd.uniform(0, 1e7),
                rnd.uniform(1e4, 1e7),
                rnd.randint(1, 5),
                None,
                None,
                10.0,
            )
            for i in range(100_000)
        ]
        started = time.perf_counter()
        scores = score_all(projects, DEFAULT_MODEL, as_of=0)
        rank(RankEntry(p.key, p.mandatory, scores[p.key].score) for p in projects)
        return time.perf_counter() - started


INSTANCE = portfolio(1000, 200)


def greedy_replan() -> float:
    # New project objects, as each replan makes from the rows it reads: a project keeps its
    # load once worked out, and a replan starts without it.
    with collector_as_served():
        projects = [dataclasses.replace(p) for p in INSTANCE.projects]
        started = time.perf_counter()
        plan(projects, INSTANCE.resources, INSTANCE.horizon)
        return time.perf_counter() - started


def optimiser_ratio(budget: float = 10.0) -> float:
    """The optimiser's objective as a fraction of the LP relaxation bound, within ``budget``."""
    model, starts = instance_model(1000, 200)
    result = solve(model, starts, time_limit=budget)
    return result.objective / result.lp_bound


def greedy_ratio() -> float:
    model, starts = instance_model(1000, 200)
    bound, values = lp_relaxation(model)
    _ = heuristics(model, values)
    return objective_of(model, starts) / bound


def judged(
    name: str, unit: str, values: list[float], target: str, met: Callable[[float], bool]
) -> dict[str, Any]:
    """A row with a target: ``met`` says whether the median meets it."""
    row = summarise(name, unit, values, target)
    row["met"] = met(row["median"])
    return row


def summarise(name: str, unit: str, values: list[float], target: str) -> dict[str, Any]:
    return {
        "row": name,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
        "target": target,
    }


class _ByQuarter(Protocol):
    @property
    def quarters(self) -> tuple[float, ...]: ...
    @property
    def broker_quarters(self) -> tuple[float, ...]: ...


def record_quarters(record: Callable[[str, float], None], stem: str, row: _ByQuarter) -> None:
    """Record a row's p50 and the broker's CPU in each quarter of it, as ``{stem}_p50_q{n}``
    and ``{stem}_broker_q{n}`` (``by_quarter`` summarises them)."""
    for quarter, (p50, broker) in enumerate(zip(row.quarters, row.broker_quarters, strict=True), 1):
        record(f"{stem}_p50_q{quarter}", p50)
        record(f"{stem}_broker_q{quarter}", broker)


def by_quarter(
    results: dict[str, list[float]], name: str, unit: str, key: str
) -> list[dict[str, Any]]:
    """The reference rows of a figure taken in each quarter of a row: ``name`` with ``{nth}``
    for the quarter ("first" …), its results under ``key`` followed by the quarter's number."""
    return [
        summarise(name.format(nth=nth), unit, results[f"{key}{quarter}"], "reference")
        for quarter, nth in enumerate(("first", "second", "third", "fourth"), 1)
    ]


async def main(sizes: Sizes = FULL) -> list[dict[str, Any]]:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pmo-bench-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the embedded server may run as its own user
        url = os.environ.get("PMO_DATABASE_URL")
        with tansu(free_port()) as bootstrap:
            if url is None:
                with embedded_postgres(Path(tmp) / "pg") as embedded:
                    await rounds(bootstrap, embedded, results, sizes)
            else:
                await rounds(bootstrap, url, results, sizes)
    rows = [
        summarise(
            "broker baseline: raw produce + consume", "msgs/s", results["broker"], "reference"
        ),
        summarise("postgres single-row commits", "commits/s", results["commits"], "reference"),
        summarise(
            "pipeline: inbound topic to read model", "subs/s", results["pipeline"], "reference"
        ),
        judged(
            "pipeline / broker baseline",
            "ratio",
            results["pipeline_ratio"],
            ">= 0.10",
            lambda v: v >= 0.10,
        ),
        # Events are the projects' changes: a record of many projects counts as its projects,
        # so batching records does not change what is counted, only how it travels.
        judged(
            "events (project events) applied / single-row commits",
            "ratio",
            results["amortisation_projects"],
            ">= 3",
            lambda v: v >= 3,
        ),
        summarise(
            "records applied / single-row commits",
            "ratio",
            results["amortisation"],
            "reference",
        ),
        summarise(
            "records applied per service transaction",
            "events",
            results["events_per_commit"],
            "reference",
        ),
        summarise(
            "pipeline: records published per submission, all services",
            "records",
            results["published"],
            "reference",
        ),
        *(
            summarise(
                f"pipeline: records published per submission, {name[10:]}",
                "records",
                values,
                "reference",
            )
            for name, values in sorted(results.items())
            if name.startswith("published_")
        ),
        judged(
            f"full rescore {sizes.rescore_projects:,}: scored, committed, published",
            "s",
            results["rescore"],
            "<= 3 s",
            lambda v: v <= 3,
        ),
        summarise(
            f"full rescore {sizes.rescore_projects:,}: model change to commit",
            "s",
            results["rescore_commit"],
            "reference",
        ),
        summarise(
            f"full rescore {sizes.rescore_projects:,}: outbox relay to broker",
            "s",
            results["rescore_relay"],
            "reference",
        ),
        summarise(
            f"full rescore {sizes.rescore_projects:,}: records the relay published",
            "records",
            results["rescore_records"],
            "reference",
        ),
        summarise("scoring 100k projects (domain only)", "s", results["scoring"], "reference"),
        judged(
            "greedy replan 1000 x 200 x 24", "s", results["greedy"], "<= 0.1 s", lambda v: v <= 0.1
        ),
        summarise("greedy plan / LP bound", "ratio", results["greedy_ratio"], "reference"),
        judged(
            "optimiser 10 s / LP bound",
            "ratio",
            results["optimiser"],
            ">= 0.95",
            lambda v: v >= 0.95,
        ),
        judged(
            "optimiser proves 100 x 20 x 24 optimal",
            "s",
            results["prove_seconds"],
            "<= 5 s",
            lambda v: v <= 5,
        ),
        summarise(
            "proven optimum 100 x 20 x 24 / LP bound", "ratio", results["prove_ratio"], "reference"
        ),
    ]
    rows += new_rows(results)
    rows += [
        summarise(f"peak RSS {name[4:]} during the pipeline", "MiB", values, "reference")
        for name, values in sorted(results.items())
        if name.startswith("rss_")
    ]
    rows += cpu_rows(results)
    rows += floor_rows(results)
    return rows


def floor_rows(results: dict[str, list[float]]) -> list[dict[str, Any]]:
    """The durable minimum (bench/floor.py): what the guarantees alone cost here."""
    return [
        summarise(
            "durable minimum: hop (consume, inbox + state + outbox, produce, clear) CPU per event",
            "us",
            results["floor_hop_us"],
            "reference",
        ),
        summarise(
            "durable minimum: sink (consume, inbox + state) CPU per event",
            "us",
            results["floor_sink_us"],
            "reference",
        ),
        summarise(
            "durable minimum: hop rate, one loop",
            "events/s",
            results["floor_hop_rate"],
            "reference",
        ),
        summarise(
            "pipeline: events applied per submission",
            "events",
            results["floor_applied"],
            "reference",
        ),
        summarise(
            "durable minimum per submission (pipeline's counts)",
            "ms",
            results["floor_ms"],
            "reference",
        ),
        summarise(
            "ceiling of the guarantees alone: cores / durable minimum / broker baseline",
            "ratio",
            results["floor_ceiling_ratio"],
            "reference",
        ),
        summarise(
            "pipeline CPU per submission / durable minimum",
            "ratio",
            results["floor_gap"],
            "reference",
        ),
    ]


def cpu_rows(results: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Where the pipeline's CPU goes, per submission, and the ceiling that puts on it."""
    groups = sorted(
        (n for n in results if n.startswith("cpu_") and n not in CPU_DERIVED),
        key=lambda n: -statistics.median(results[n]),
    )
    return [
        *(
            summarise(f"pipeline CPU per submission: {n[4:]}", "ms", results[n], "reference")
            for n in groups
        ),
        summarise("pipeline CPU per submission: all", "ms", results["cpu_total"], "reference"),
        summarise(
            "machine busy during the pipeline", "share", results["machine_busy"], "reference"
        ),
        summarise(
            "pipeline ceiling: cores / own CPU per submission",
            "subs/s",
            results["cpu_ceiling"],
            "reference",
        ),
        summarise(
            "pipeline ceiling / broker baseline", "ratio", results["cpu_ceiling_ratio"], "reference"
        ),
    ]


CPU_DERIVED = {"cpu_total", "cpu_ceiling", "cpu_ceiling_ratio"}


def new_rows(results: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Freshness, framework overhead and the reporting API."""
    return [
        judged(
            "freshness p50: publish to visible in API",
            "ms",
            results["fresh_p50"],
            "<= 50 ms",
            lambda v: v <= 50,
        ),
        judged(
            "freshness p99: publish to visible in API",
            "ms",
            results["fresh_p99"],
            "<= 250 ms",
            lambda v: v <= 250,
        ),
        *(
            summarise(
                f"freshness: publish to {what} in the read model {p}",
                "ms",
                results[key],
                "reference",
            )
            for what, stem in (("scored", "fresh_scored"), ("planned", "fresh_planned"))
            for p, key in (("p50", f"{stem}_p50"), ("p99", f"{stem}_p99"))
        ),
        *by_quarter(
            results,
            "freshness p50, submissions published in the row's {nth} quarter",
            "ms",
            "fresh_p50_q",
        ),
        *by_quarter(
            results, "freshness: broker CPU in the row's {nth} quarter", "ms/s", "fresh_broker_q"
        ),
        *(
            summarise(
                f"freshness p50 of a stage: {stage}",
                "ms",
                results[f"fresh_stage{index}_p50"],
                "reference",
            )
            for index, stage in enumerate(STAGES, 1)
        ),
        summarise(
            f"freshness p50 at {LOW_RATE:g} subs/s", "ms", results["fresh_low_p50"], "reference"
        ),
        summarise(
            f"freshness p99 at {LOW_RATE:g} subs/s", "ms", results["fresh_low_p99"], "reference"
        ),
        summarise(
            "freshness at a quarter of the pipeline's rate: the rate",
            "subs/s",
            results["fresh_quarter_rate"],
            "reference",
        ),
        *(
            summarise(
                f"freshness {p} at a quarter of the pipeline's rate",
                "ms",
                results[key],
                "reference",
            )
            for p, key in (("p50", "fresh_quarter_p50"), ("p99", "fresh_quarter_p99"))
        ),
        summarise(
            "freshness at a quarter of the pipeline's rate: CPU per submission",
            "ms",
            results["fresh_quarter_cpu_ms"],
            "reference",
        ),
        summarise(
            "freshness at a quarter of the pipeline's rate: machine busy",
            "share",
            results["fresh_quarter_busy"],
            "reference",
        ),
        summarise(
            "path floor p50: two durable hops, no domain work, at the freshness rate",
            "ms",
            results["path_floor_p50"],
            "reference",
        ),
        summarise(
            "path floor p99: two durable hops, no domain work, at the freshness rate",
            "ms",
            results["path_floor_p99"],
            "reference",
        ),
        *by_quarter(
            results,
            "path floor p50, submissions published in the row's {nth} quarter",
            "ms",
            "path_floor_p50_q",
        ),
        *by_quarter(
            results,
            "path floor: broker CPU in the row's {nth} quarter",
            "ms/s",
            "path_floor_broker_q",
        ),
        summarise(
            "path floor: CPU per submission", "ms", results["path_floor_cpu_ms"], "reference"
        ),
        summarise("path floor: machine busy", "share", results["path_floor_busy"], "reference"),
        *(
            summarise(
                f"path floor: seconds waiting for a core per second run, {group}",
                "ratio",
                results[f"path_floor_wait_{group}"],
                "reference",
            )
            for group in FLOOR_WAITED
        ),
        summarise(
            "freshness p50 / path floor p50", "ratio", results["fresh_floor_p50"], "reference"
        ),
        summarise("raw produce -> consume hop p50", "ms", results["hop_p50"], "reference"),
        summarise("raw produce -> consume hop p99", "ms", results["hop_p99"], "reference"),
        *by_quarter(
            results,
            "raw hop p50, records sent in the row's {nth} quarter",
            "ms",
            "hop_p50_q",
        ),
        *by_quarter(
            results, "raw hop: broker CPU in the row's {nth} quarter", "ms/s", "hop_broker_q"
        ),
        summarise("freshness p50 / raw hop p50", "ratio", results["fresh_hop_p50"], "reference"),
        summarise("freshness p99 / raw hop p99", "ratio", results["fresh_hop_p99"], "reference"),
        summarise(
            "freshness: offered rate (pipeline / 2)", "subs/s", results["fresh_rate"], "reference"
        ),
        summarise(
            "freshness: records published per submission, all services",
            "records",
            results["fresh_published"],
            "reference",
        ),
        summarise(
            "freshness: records published per submission, scoring",
            "records",
            results["fresh_published_scoring"],
            "reference",
        ),
        summarise(
            "freshness: records published per submission, reporting",
            "records",
            results["fresh_published_reporting"],
            "reference",
        ),
        summarise(
            "freshness: CPU per submission, services + broker + Postgres + load generator",
            "ms",
            results["fresh_cpu_ms"],
            "reference",
        ),
        summarise("freshness: machine busy", "share", results["fresh_busy"], "reference"),
        *(
            summarise(
                f"freshness: seconds waiting for a core per second run, {group}",
                "ratio",
                results[f"fresh_wait_{group}"],
                "reference",
            )
            for group in WAITED
        ),
        summarise(
            "idle stack: broker CPU (consumers' empty fetches)",
            "ms/s",
            results["idle_broker"],
            "reference",
        ),
        summarise(
            "idle stack: the four services' CPU", "ms/s", results["idle_services"], "reference"
        ),
        summarise("idle stack: Postgres CPU", "ms/s", results["idle_postgres"], "reference"),
        summarise("idle stack: share of all cores", "share", results["idle_share"], "reference"),
        summarise(
            "freshness: submissions watched (a uniform sample)",
            "submissions",
            results["fresh_watched"],
            "reference",
        ),
        summarise(
            "freshness: the observer's requests to the API",
            "req/s",
            results["fresh_observer_rps"],
            "reference",
        ),
        summarise("relay: FastStream batch", "msgs/s", results["relay_fs"], "reference"),
        summarise("relay: hand-written aiokafka", "msgs/s", results["relay_ak"], "reference"),
        judged(
            "FastStream relay / aiokafka relay",
            "ratio",
            results["relay_ratio"],
            ">= 0.7",
            lambda v: v >= 0.7,
        ),
        judged(
            "ranking API p99, 10k projects, 50 clients",
            "ms",
            results["api_p99"],
            "<= 50 ms",
            lambda v: v <= 50,
        ),
        summarise("ranking API p50, same load", "ms", results["api_p50"], "reference"),
        summarise("ranking API throughput", "req/s", results["api_rps"], "reference"),
        summarise("/health/live p99, same load", "ms", results["live_p99"], "reference"),
        summarise("/health/live throughput", "req/s", results["live_rps"], "reference"),
        summarise("ranking p99 / /health/live p99", "ratio", results["api_live_p99"], "reference"),
        summarise(
            "ranking API: load generator's share of the row's CPU",
            "share",
            results["api_client_share"],
            "reference",
        ),
        summarise(
            "ranking API: server CPU per request", "ms", results["api_server_cpu_ms"], "reference"
        ),
    ]


def report(rows: list[dict[str, Any]], name: str = "bench.json") -> None:
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / name).write_text(json.dumps(rows, indent=2))
    width = max(len(r["row"]) for r in rows)
    for r in rows:
        spread = f"({r['min']:.4g}..{r['max']:.4g})"
        line = f"{r['row']:<{width}}  {r['median']:>12.4g} {r['unit']:<9} {spread}"
        verdict = "" if r.get("met") is None else " - met" if r["met"] else " - NOT met"
        print(f"{line}  target {r['target']}{verdict}")


async def rounds(
    bootstrap: str, url: str, results: dict[str, list[float]], sizes: Sizes = FULL
) -> None:
    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    for index in range(ROUNDS):  # interleaved: every row once per round
        broker = await broker_baseline(bootstrap)
        commits = await single_row_commits(url)
        record("broker", broker)
        record("commits", commits)
        record("scoring", await asyncio.to_thread(scoring_100k))
        rescore = await full_rescore(url, sizes.rescore_projects, bootstrap=bootstrap)
        record("rescore_commit", rescore["seconds"])
        record("rescore_relay", rescore["relay"])
        record("rescore", rescore["seconds"] + rescore["relay"])
        # Scores travel many projects a record (ScoresChanged): how many records carried them.
        record("rescore_records", rescore["relayed"])
        record("greedy", await asyncio.to_thread(greedy_replan))
        record("greedy_ratio", await asyncio.to_thread(greedy_ratio))
        record("optimiser", await asyncio.to_thread(optimiser_ratio))
        proof = await asyncio.to_thread(prove_small)
        record("prove_seconds", proof["seconds"] if proof["proven"] else float("inf"))
        record("prove_ratio", proof["objective_over_lp"])
        result = await pipeline(bootstrap, url, sizes.pipeline_submissions)
        record("pipeline", result.per_second)
        record("pipeline_ratio", result.per_second / broker)
        # Records applied, as the services' inboxes count them; and the project events they
        # carry (a ProjectsChanged, ScoresChanged or PlansChanged record counts as its projects).
        record("amortisation", result.events_per_second / commits)
        record("amortisation_projects", result.project_events_per_second / commits)
        record("events_per_commit", result.events_per_commit)
        for service, per in result.published.items():
            record(f"published_{service}", per)
        record("published", sum(result.published.values()))
        for service, mb in result.peak_rss_mb.items():
            record(f"rss_{service}", mb)
        for group, ms in result.cpu_ms.items():
            record(f"cpu_{group}", ms)
        record("cpu_total", sum(result.cpu_ms.values()))
        record("machine_busy", result.machine_busy)
        record("cpu_ceiling", result.cpu_ceiling)
        record("cpu_ceiling_ratio", result.cpu_ceiling / broker)
        await floor_round(bootstrap, url, record, sizes, result, broker)
        await new_row_round(bootstrap, url, record, sizes, result.per_second / 2, index)


async def floor_round(
    bootstrap: str,
    url: str,
    record: Callable[[str, float], None],
    sizes: Sizes,
    result: PipelineResult,
    broker: float,
) -> None:
    """The durable minimum (bench/floor.py) with this round's pipeline counts: the least CPU a
    submission can cost with the pipeline's guarantees, and the ceiling that puts on the rate."""
    durable_hop, sink = await durable_minimum(bootstrap, url, sizes.floor_events, PAYLOAD)
    published = sum(result.published.values())
    applied = result.events_per_second / result.per_second
    floor = floor_per_submission(durable_hop.cpu_ms, sink.cpu_ms, published, applied)
    record("floor_hop_us", durable_hop.cpu_ms * 1000)
    record("floor_sink_us", sink.cpu_ms * 1000)
    record("floor_hop_rate", durable_hop.per_second)
    record("floor_applied", applied)
    record("floor_ms", floor)
    record("floor_ceiling_ratio", CORES * 1000 / floor / broker)
    own = own_ms(result.cpu_ms)
    record("floor_gap", own / floor)


async def new_row_round(
    bootstrap: str,
    url: str,
    record: Callable[[str, float], None],
    sizes: Sizes,
    rate: float,
    index: int,
) -> None:
    """One round of freshness (at ``rate``, half this round's pipeline figure), framework
    overhead and the reporting API."""
    raw = await hop(bootstrap, rate, sizes.freshness_seconds)
    fresh = await freshness(bootstrap, url, rate, sizes.freshness_seconds)
    record("hop_p50", raw.latency.p50_ms)
    record("hop_p99", raw.latency.p99_ms)
    record_quarters(record, "hop", raw)
    record("fresh_p50", fresh.latency.p50_ms)
    record("fresh_p99", fresh.latency.p99_ms)
    record_quarters(record, "fresh", fresh)
    for stage, p50 in enumerate(fresh.stages.values(), 1):
        record(f"fresh_stage{stage}_p50", p50)
    # The same at a trickle: the latency of the path itself, without queues or the observer's
    # own requests loading the reporting process.
    low = await freshness(bootstrap, url, LOW_RATE, sizes.freshness_seconds)
    # And at a quarter of the pipeline's rate: whether the machine fills and the latency grows
    # with the rate, or the loops run as often as they can whatever it is (docs/performance.md).
    slower = await freshness(bootstrap, url, rate / 2, sizes.freshness_seconds)
    record("fresh_scored_p50", fresh.scored.p50_ms)
    record("fresh_scored_p99", fresh.scored.p99_ms)
    record("fresh_planned_p50", fresh.planned.p50_ms)
    record("fresh_planned_p99", fresh.planned.p99_ms)
    record("fresh_low_p50", low.latency.p50_ms)
    record("fresh_low_p99", low.latency.p99_ms)
    record("fresh_quarter_rate", slower.offered_per_second)
    record("fresh_quarter_p50", slower.latency.p50_ms)
    record("fresh_quarter_p99", slower.latency.p99_ms)
    record("fresh_quarter_cpu_ms", own_ms(slower.cpu_ms))
    record("fresh_quarter_busy", slower.machine_busy)
    record("fresh_hop_p50", fresh.latency.p50_ms / raw.latency.p50_ms)
    record("fresh_hop_p99", fresh.latency.p99_ms / raw.latency.p99_ms)
    record("fresh_rate", fresh.offered_per_second)
    record("fresh_published", sum(fresh.published.values()))
    record("fresh_published_scoring", fresh.published["scoring"])
    record("fresh_published_reporting", fresh.published["reporting"])
    record("fresh_watched", fresh.watched)
    record("fresh_observer_rps", fresh.api_requests_per_second)
    record("fresh_cpu_ms", own_ms(fresh.cpu_ms))
    record("fresh_busy", fresh.machine_busy)
    for group in WAITED:
        record(f"fresh_wait_{group}", fresh.waits[group])
    # The same path with no domain work (bench/path_floor.py), at the same rate.
    least = await path_floor(bootstrap, url, rate, sizes.freshness_seconds)
    record("path_floor_p50", least.latency.p50_ms)
    record("path_floor_p99", least.latency.p99_ms)
    record_quarters(record, "path_floor", least)
    record("path_floor_cpu_ms", own_ms(least.cpu_ms))
    record("path_floor_busy", least.machine_busy)
    for group in FLOOR_WAITED:
        record(f"path_floor_wait_{group}", least.waits[group])
    record("fresh_floor_p50", fresh.latency.p50_ms / least.latency.p50_ms)
    idle = await idle_cost(bootstrap, url, sizes.idle_seconds)
    services = sum(v for group, v in idle.items() if group not in NOT_SERVICES)
    record("idle_broker", idle["broker"])
    record("idle_services", services)
    record("idle_postgres", idle["postgres"])
    record("idle_share", (idle["broker"] + services + idle["postgres"]) / (CORES * 1000))
    fs, ak = await framework_overhead(
        bootstrap, sizes.relay_messages, PAYLOAD, faststream_first=index % 2 == 0
    )
    record("relay_fs", fs)
    record("relay_ak", ak)
    record("relay_ratio", fs / ak)
    api = await reporting_api(
        bootstrap,
        url,
        projects=sizes.api_projects,
        clients=sizes.api_clients,
        seconds=sizes.api_seconds,
    )
    record("api_p50", api.ranking.p50_ms)
    record("api_p99", api.ranking.p99_ms)
    record("api_rps", api.ranking.per_second)
    record("live_p99", api.live.p99_ms)
    record("live_rps", api.live.per_second)
    record("api_live_p99", api.ranking.p99_ms / api.live.p99_ms)
    record("api_client_share", api.ranking.client_cpu_share)
    record("api_server_cpu_ms", api.ranking.server_cpu_ms)


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    started = time.perf_counter()
    report(
        asyncio.run(main(QUICK if quick else FULL)), "bench-quick.json" if quick else "bench.json"
    )
    print(f"{'quick ' if quick else ''}run took {time.perf_counter() - started:.0f} s")
