"""Capacity's use cases.

Events (projects, ranks, resources): applied, and each portfolio they touch is marked as due
for a replan, in the batch's transaction. The replanner (a task beside the consumer) replans
each due portfolio in a transaction of its own, publishing every placement that moved and the
portfolio's summary (utilisation, conflicts, skill gaps) when it changed. Consumption never
waits for planning: a batch takes no portfolio lock (its writes are guarded by versions), and
the replanner reads the count of requests before its inputs and clears the request at the end
only if no batch asked since; one replica replans a portfolio at a time (a try-lock). However
many batches touch a portfolio while it is being replanned, they cost one more replan: under
load replans coalesce, when idle a change is planned at once. The request is durable, so a
crash between the batch and its replan loses nothing.

Requests (what-if, optimise): computed before that transaction against the plan as it stands,
so a long optimisation holds no locks; the result is published inside the transaction that
records the request id, so a redelivered request is answered exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import BaseModel

from services.capacity.domain.analysis import conflicts, skill_gaps, utilisation
from services.capacity.domain.optimiser import optimise
from services.capacity.domain.planner import Demand, Horizon, Plan, PlanProject, plan
from services.capacity.domain.planner import Placement as DomainPlacement
from services.capacity.domain.scenarios import (
    ScenarioError,
    apply,
    compare,
    utilisation_changes,
)
from services.capacity.repository import CapacityUnitOfWork, PortfolioInputs, StoredPlacement
from shared import metrics
from shared.admission import admit, newest, per_project, rank_moves, refuse
from shared.cloudevents import batched_messages, event_message
from shared.consumer_record import Record
from shared.contracts.capacity import (
    CAPACITY_REQUEST,
    Cell,
    CellDiff,
    ConflictInfo,
    Optimise,
    OptimiserReport,
    Placement,
    PortfolioPlanned,
    ProjectDiff,
    ScenarioResult,
    SkillGapInfo,
    WhatIf,
)
from shared.contracts.common import month_from_index, month_index
from shared.contracts.events import (
    PlansChanged,
    ProjectChanged,
    ProjectPlan,
    ProjectsChanged,
    ProjectScored,
    ProjectState,
    RankingChanged,
    ScoresChanged,
)
from shared.contracts.inbound import ResourceUpdate
from shared.errors import Reason
from shared.events_io import decode_json, decode_typed
from shared.loops import Isolation, keep_running
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "capacity"
MAX_RESOURCE_BYTES = 64 * 1024
MAX_REQUEST_BYTES = 256 * 1024
Request = WhatIf | Optimise


def decode_resource(record: Record) -> tuple[str, ResourceUpdate] | list[Reason]:
    """An inbound resource update, validated as strictly as project submissions."""
    update = decode_json(record, ResourceUpdate, max_bytes=MAX_RESOURCE_BYTES)
    if isinstance(update, list):
        return update
    expected = f"{update.portfolio}/{update.resource_id}".encode()
    if record.key is not None and record.key != expected:
        return [Reason("key_mismatch", f"key is not {expected.decode()!r}", "<key>")]
    return f"resource:{update.update_id}", update


def decode_request(record: Record) -> tuple[str, Request] | list[Reason]:
    request = decode_json(record, CAPACITY_REQUEST, max_bytes=MAX_REQUEST_BYTES)
    if isinstance(request, list):
        return request
    return f"request:{request.request_id}", request


@dataclass(frozen=True, slots=True)
class _Decoders:
    topics: TopicNames

    def __call__(self, record: Record) -> tuple[str, BaseModel] | list[Reason]:
        topic = self.topics.base(record.topic)
        if topic == Topic.RESOURCES:
            return decode_resource(record)
        if topic == Topic.CAPACITY_COMMANDS:
            return decode_request(record)
        if topic == Topic.SCORES:
            return decode_typed(record, ProjectScored, ScoresChanged, RankingChanged)
        return decode_typed(record, ProjectChanged, ProjectsChanged)


def plan_project(
    key: str, withdrawn: bool, state: ProjectState, rank: int | None, score: float | None = None
) -> PlanProject:
    return PlanProject(
        key=key,
        external_id=state.external_id,
        stage=state.stage,
        withdrawn=withdrawn,
        rank=rank,
        earliest_start=month_index(state.earliest_start) if state.earliest_start else None,
        deadline=month_index(state.deadline) if state.deadline else None,
        demand=tuple(Demand(d.role, d.fte, d.start_month, d.months) for d in state.demand),
        depends_on=tuple(state.depends_on),
        mandatory=state.mandatory,
    )


def plans_changed(
    topic: str,
    portfolio: str,
    version: int,
    moved: Sequence[tuple[str, StoredPlacement]],
    now: datetime,
) -> list[OutboxMessage]:
    """``PlansChanged`` records of a replan's moved projects, in order, keyed by the portfolio;
    each value is the contract's serialisation (tested)."""
    entries = [
        ProjectPlan(
            project_key=key,
            status=p.status,
            start_month=p.start_month,
            end_month=p.end_month,
            deferral=p.deferral,
        )
        .model_dump_json()
        .encode()
        for key, p in moved
    ]
    return batched_messages(
        topic=topic,
        key=portfolio,
        empty=PlansChanged(portfolio=portfolio, plan_version=version, plans=[]),
        entries=entries,
        max_entries=PlansChanged.MAX_PLANS,
        max_bytes=PlansChanged.MAX_BYTES,
        event_id=f"capacity-plans:{portfolio}:{version}",
        source="pmo/capacity",
        time=now,
    )


def _month(m: int | None) -> str | None:
    return month_from_index(m) if m is not None else None


def _resource_key(update: ResourceUpdate) -> str:
    return f"{update.portfolio}/{update.resource_id}"


class CapacityHandler:
    def __init__(
        self,
        uow: Callable[[], CapacityUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
        horizon_months: int = 24,
        plan_start: str | None = None,
        replan_spacing: timedelta = timedelta(0),
    ) -> None:
        """``replan_spacing``: the least time between two replans of one portfolio (zero:
        replan as soon as a batch asks)."""
        self._uow = uow
        self._topics = topics
        self._clock = clock
        self._horizon_months = horizon_months
        self._plan_start = plan_start
        self._replan_wanted = asyncio.Event()
        self._isolation = Isolation(
            "replanning", on_failure=metrics.REPLAN_FAILURES.labels(SERVICE).inc
        )
        self._replan_spacing = replan_spacing
        # Seconds until a portfolio waiting only for its spacing is due (None: none is).
        self._next_due: float | None = None

    def horizon(self, now: datetime) -> Horizon:
        start = month_index(self._plan_start) if self._plan_start else now.year * 12 + now.month - 1
        return Horizon(start, self._horizon_months)

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        answers = await self._answer_requests(records, now)
        async with self._uow() as uow:
            batch = await admit(
                uow,
                records,
                _Decoders(self._topics),
                consumer=SERVICE,
                dead_letter_topic=self._topics(Topic.DEAD_LETTERS),
                now=now,
            )
            out = list(batch.dead_letters)
            items = [item for _, item in batch.items]
            projects = per_project(items, ProjectsChanged, ProjectChanged)
            scores = per_project(items, ScoresChanged, ProjectScored)
            rankings = [e for e in items if isinstance(e, RankingChanged)]
            resources = [e for e in items if isinstance(e, ResourceUpdate)]
            # No portfolio lock: every write is guarded by its version, and the replan request
            # is counted, so a batch never waits for a replan in progress (docstring above).
            changed = sorted({e.portfolio for e in projects + scores + rankings + resources})
            repo = uow.plans
            await repo.save_projects(
                newest(
                    projects,
                    lambda e: e.project_key,
                    lambda e: e.revision,
                    await repo.project_revisions({e.project_key for e in projects}),
                )
            )
            await repo.save_ranks(
                newest(
                    scores,
                    lambda e: e.project_key,
                    lambda e: e.ranking_version,
                    await repo.ranking_versions({e.project_key for e in scores}),
                )
            )
            # After the scores: a move only replaces a rank of an older version (SQL guard).
            await repo.move_ranks(rank_moves(rankings))
            await repo.save_resources(
                newest(
                    resources,
                    _resource_key,
                    lambda u: u.revision,
                    await repo.resource_revisions({_resource_key(u) for u in resources}),
                )
            )
            await repo.request_replan(changed)
            for record, item in batch.items:
                if isinstance(item, WhatIf | Optimise):
                    answer = answers.get(f"request:{item.request_id}")
                    if answer is None:  # recorded as done when read, fresh now: not expected,
                        # but answering from the current state is still right
                        inputs = await repo.inputs(item.portfolio)
                        answer = await asyncio.to_thread(self._evaluate, item, inputs, now)
                    out.append(self._answer_message(record, item, answer, now))
            await uow.emit(out)
        if changed:
            self._replan_wanted.set()

    # --- replanning --------------------------------------------------------------------------

    async def replan_due(self, limit: int = 100) -> int:
        """Replan the portfolios waiting for it (up to ``limit``), each in its own transaction
        under its portfolio lock; returns how many were replanned."""
        async with self._uow() as uow:
            due, self._next_due = await uow.plans.due_replans(limit, self._replan_spacing)
        # A defect met by one portfolio does not stop the planning of the others: its request
        # stays (the transaction rolled back) and is retried after 30 s, counted and logged.
        done = 0
        for portfolio in due:
            done += await self._isolation.run(portfolio, partial(self._replan_one, portfolio))
        return done

    async def _replan_one(self, portfolio: str) -> int:
        now = self._clock()
        async with self._uow() as uow:
            if not await uow.try_lock(portfolio):  # another replica is replanning it
                return 0
            requests = await uow.plans.replan_request(portfolio)
            if requests is None:  # another replica replanned it first
                return 0
            started = time.perf_counter()
            inputs = await uow.plans.inputs(portfolio)
            messages, version, digest = await self._replan(uow, portfolio, inputs, now)
            await uow.emit(messages)
            # A batch that committed after ``requests`` was read may be missing from the
            # inputs: its request keeps the portfolio due, and it is replanned again.
            waited = await uow.plans.finish_replan(
                portfolio, requests, plan_version=version, summary_hash=digest
            )
        metrics.REPLANS.labels(SERVICE).observe(time.perf_counter() - started)
        if waited is not None:
            metrics.REPLAN_WAIT.labels(SERVICE).observe(waited)
        return 1

    async def run_replanner(self, poll_seconds: float = 1.0) -> None:
        """Replan due portfolios until cancelled: at once when a batch asks, and every
        ``poll_seconds`` for requests left by another replica or before a restart. While a
        portfolio waits for its spacing, the replanner sleeps until it is due instead of waking
        for each batch. Transient failures back off and retry."""

        async def replan() -> bool:
            self._replan_wanted.clear()
            return await self.replan_due() >= 100

        async def idle() -> None:
            if self._next_due is not None:
                await asyncio.sleep(min(self._next_due, poll_seconds))
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replan_wanted.wait(), poll_seconds)

        await keep_running("replanner", replan, idle)

    async def _replan(
        self, uow: CapacityUnitOfWork, portfolio: str, inputs: PortfolioInputs, now: datetime
    ) -> tuple[list[OutboxMessage], int | None, str | None]:
        """The replan's messages, its plan version and its summary's new hash (None, None when
        nothing changed; the hash is None too when the summary did not change)."""
        horizon = self.horizon(now)
        projects = [plan_project(*row) for row in inputs.projects]
        result = plan(projects, inputs.resources, horizon)
        moved: list[tuple[str, StoredPlacement]] = []
        for key, placement in result.placements.items():
            stored = StoredPlacement(
                placement.status, _month(placement.start), _month(placement.end), placement.deferral
            )
            if inputs.placements.get(key) != stored:
                moved.append((key, stored))
        summary = self._summary(portfolio, result, projects, horizon, now)
        digest = hashlib.sha256(
            summary.model_dump_json(exclude={"plan_version", "planned_at"}).encode()
        ).hexdigest()
        last_version, last_digest = await uow.plans.plan_state(portfolio)
        summary_changed = digest != last_digest
        if not moved and not summary_changed:
            return [], None, None
        version = last_version + 1
        await uow.plans.save_placements(portfolio, moved)
        messages = plans_changed(self._topics(Topic.PLANS), portfolio, version, moved, now)
        if summary_changed:
            messages.append(
                event_message(
                    topic=self._topics(Topic.PLAN_SUMMARIES),
                    key=portfolio,
                    event=summary.model_copy(update={"plan_version": version}),
                    event_id=f"capacity-summary:{portfolio}:{version}",
                    source="pmo/capacity",
                    time=now,
                )
            )
        return messages, version, digest if summary_changed else None

    def _summary(
        self,
        portfolio: str,
        result: Plan,
        projects: list[PlanProject],
        horizon: Horizon,
        now: datetime,
    ) -> PortfolioPlanned:
        ranks = {p.key: p.rank for p in projects}
        return PortfolioPlanned(
            portfolio=portfolio,
            plan_version=0,
            horizon_start=month_from_index(horizon.start),
            horizon_months=horizon.months,
            planned_at=now,
            utilisation=[
                Cell(
                    role=c.role,
                    month=month_from_index(c.month),
                    capacity=c.capacity,
                    demand=c.demand,
                )
                for c in utilisation(result, projects, horizon)
            ],
            conflicts=[
                ConflictInfo(
                    role=c.role,
                    month=month_from_index(c.month),
                    demand=c.demand,
                    capacity=c.capacity,
                    projects=list(c.projects),
                    suggestion=c.suggestion,
                )
                for c in conflicts(result, projects, horizon, ranks)
            ],
            skill_gaps=[
                SkillGapInfo(
                    role=g.role,
                    month=month_from_index(g.month),
                    demand=g.demand,
                    capacity=g.capacity,
                    gap=round(g.gap, 6),
                    uncovered=g.uncovered,
                )
                for g in skill_gaps(result, projects, horizon)
            ],
        )

    # --- requests ----------------------------------------------------------------------------

    async def _answer_requests(
        self, records: Sequence[Record], now: datetime
    ) -> dict[str, ScenarioResult | list[Reason]]:
        """Results of the fresh requests in ``records``, computed outside any transaction."""
        requests = {}
        for record in records:
            if self._topics.base(record.topic) != Topic.CAPACITY_COMMANDS:
                continue
            decoded = decode_request(record)
            if isinstance(decoded, tuple):
                requests[decoded[0]] = decoded[1]
        if not requests:
            return {}
        async with self._uow() as uow:
            done = await uow.seen(list(requests))
            inputs = {
                r.portfolio: await uow.plans.inputs(r.portfolio)
                for i, r in requests.items()
                if i not in done
            }
        answers: dict[str, ScenarioResult | list[Reason]] = {}
        for request_id, request in requests.items():
            if request_id in inputs or (request.portfolio in inputs and request_id not in done):
                answers[request_id] = await asyncio.to_thread(
                    self._evaluate, request, inputs[request.portfolio], now
                )
        return answers

    def _evaluate(
        self, request: Request, inputs: PortfolioInputs, now: datetime
    ) -> ScenarioResult | list[Reason]:
        horizon = self.horizon(now)
        projects = [plan_project(*row) for row in inputs.projects]
        base = plan(projects, inputs.resources, horizon)
        scores = {row[0]: row[4] or 0.0 for row in inputs.projects}
        if isinstance(request, Optimise):
            values = {row[0]: row[2].value or 0.0 for row in inputs.projects}
            costs = {row[0]: row[2].cost for row in inputs.projects}
            priorities = scores if request.objective == "score" else values
            _, result = optimise(
                projects,
                inputs.resources,
                horizon,
                priorities,
                time_limit=request.time_limit_seconds,
                budget=request.budget,
                costs=costs,
            )
            starts = {p.key: p for p in projects}
            optimised = _as_plan(base, starts, result.starts)
            greedy_started = [k for k in result.starts if base.placements[k].status == "planned"]
            started = [k for k, s in result.starts.items() if s is not None]
            return self._result(
                request,
                "optimise",
                f"optimal plan by {request.objective}",
                base,
                projects,
                optimised,
                projects,
                horizon,
                now,
                OptimiserReport(
                    status=result.status,
                    solver=result.solver,
                    objective=round(result.objective, 6),
                    bound=round(result.bound, 6),
                    lp_bound=round(result.lp_bound, 6),
                    gap=round(result.gap, 6),
                    greedy_objective=round(result.greedy_objective, 6),
                    seconds=round(result.seconds, 3),
                    budget=request.budget,
                    cost=sum(costs[k] or 0.0 for k in started),
                    greedy_cost=sum(costs[k] or 0.0 for k in greedy_started),
                ),
            )
        try:
            changed_projects, changed_resources, _ = apply(
                request.portfolio, projects, inputs.resources, request.scenario, horizon
            )
        except ScenarioError as exc:
            return exc.reasons
        scenario = plan(changed_projects, changed_resources, horizon)
        return self._result(
            request,
            "whatif",
            request.scenario.name,
            base,
            projects,
            scenario,
            changed_projects,
            horizon,
            now,
            None,
        )

    def _result(
        self,
        request: Request,
        kind: str,
        name: str,
        base: Plan,
        base_projects: list[PlanProject],
        other: Plan,
        other_projects: list[PlanProject],
        horizon: Horizon,
        now: datetime,
        report: OptimiserReport | None,
    ) -> ScenarioResult:
        diffs = compare(base, other)

        def placement(p: DomainPlacement | None) -> Placement | None:
            if p is None:
                return None
            return Placement(status=p.status, start_month=_month(p.start), end_month=_month(p.end))

        return ScenarioResult(
            request_id=str(request.request_id),
            portfolio=request.portfolio,
            kind=kind,
            name=name,
            author=request.author,
            computed_at=now,
            started=sum(
                1
                for d in diffs
                if d.change in ("started", "added")
                and d.scenario
                and d.scenario.status == "planned"
            ),
            deferred=sum(1 for d in diffs if d.change == "deferred"),
            moved=sum(1 for d in diffs if d.change == "moved"),
            projects=[
                ProjectDiff(
                    project_key=d.key,
                    change=d.change,
                    baseline=placement(d.baseline),
                    scenario=placement(d.scenario),
                )
                for d in diffs
            ],
            utilisation=[
                CellDiff(
                    role=b.role,
                    month=month_from_index(b.month),
                    capacity_before=b.capacity,
                    demand_before=b.demand,
                    capacity_after=a.capacity,
                    demand_after=a.demand,
                )
                for b, a in utilisation_changes(base, base_projects, other, other_projects, horizon)
            ],
            optimiser=report,
        )

    def _answer_message(
        self, record: Record, request: Request, answer: ScenarioResult | list[Reason], now: datetime
    ) -> OutboxMessage:
        if isinstance(answer, list):
            return refuse(
                record, answer, consumer=SERVICE, topic=self._topics(Topic.DEAD_LETTERS), now=now
            )
        return event_message(
            topic=self._topics(Topic.SCENARIOS),
            key=request.portfolio,
            event=answer,
            event_id=f"scenario:{request.request_id}",
            source="pmo/capacity",
            time=now,
        )


def _added_and_placed(diff: Any) -> bool:
    return bool(
        diff.change == "added"
        and diff.scenario is not None
        and diff.scenario.status in ("planned", "committed")
    )


def _as_plan(base: Plan, projects: dict[str, PlanProject], starts: dict[str, int | None]) -> Plan:
    """The baseline plan with the optimiser's choices for its candidates."""
    placements = dict(base.placements)
    for key, start in starts.items():
        if start is None:
            placements[key] = DomainPlacement("deferred", deferral=base.placements[key].deferral)
        else:
            placements[key] = DomainPlacement("planned", start, start + projects[key].duration - 1)
    return Plan(placements, base.capacity, base.remaining)
