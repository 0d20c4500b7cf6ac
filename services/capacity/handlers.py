"""Capacity's use case: apply project, rank and resource changes, replan each portfolio they
touch once per batch (a burst of updates costs one replan), and publish every placement that
moved — all in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ValidationError

from services.capacity.domain.planner import Demand, Horizon, PlanProject, plan
from services.capacity.repository import CapacityUnitOfWork, PortfolioInputs, StoredPlacement
from shared.admission import admit, newest
from shared.cloudevents import event_message
from shared.consumer_record import Record
from shared.contracts.common import month_from_index, month_index
from shared.contracts.events import ProjectChanged, ProjectPlanned, ProjectScored, ProjectState
from shared.contracts.inbound import ResourceUpdate
from shared.errors import Reason, validation_reasons
from shared.events_io import decode_event
from shared.outbox import OutboxMessage
from shared.topics import Topic, TopicNames

SERVICE = "capacity"
MAX_RESOURCE_BYTES = 64 * 1024


def decode_resource(record: Record) -> tuple[str, ResourceUpdate] | list[Reason]:
    """An inbound resource update, validated as strictly as project submissions."""
    if not record.value:
        return [Reason("empty", "the message has no value")]
    if len(record.value) > MAX_RESOURCE_BYTES:
        return [Reason("payload_too_large", f"{len(record.value)} bytes; the limit is 65536")]
    try:
        update = ResourceUpdate.model_validate_json(record.value)
    except ValidationError as exc:
        return validation_reasons(exc)
    expected = f"{update.portfolio}/{update.resource_id}".encode()
    if record.key is not None and record.key != expected:
        return [Reason("key_mismatch", f"key is not {expected.decode()!r}", "<key>")]
    return f"resource:{update.update_id}", update


@dataclass(frozen=True, slots=True)
class _Decoders:
    topics: TopicNames

    def __call__(self, record: Record) -> tuple[str, BaseModel] | list[Reason]:
        topic = self.topics.base(record.topic)
        if topic == Topic.RESOURCES:
            return decode_resource(record)
        if topic == Topic.SCORES:
            return decode_event(record, ProjectScored)
        return decode_event(record, ProjectChanged)


class CapacityHandler:
    def __init__(
        self,
        uow: Callable[[], CapacityUnitOfWork],
        topics: TopicNames,
        clock: Callable[[], datetime],
        horizon_months: int = 24,
        plan_start: str | None = None,
    ) -> None:
        self._uow = uow
        self._topics = topics
        self._clock = clock
        self._horizon_months = horizon_months
        self._plan_start = plan_start

    def horizon(self, now: datetime) -> Horizon:
        start = month_index(self._plan_start) if self._plan_start else now.year * 12 + now.month - 1
        return Horizon(start, self._horizon_months)

    async def handle(self, records: Sequence[Record]) -> None:
        now = self._clock()
        async with self._uow() as uow:
            batch = await admit(
                uow,
                records,
                _Decoders(self._topics),
                consumer=SERVICE,
                dead_letter_topic=self._topics(Topic.DEAD_LETTERS),
                now=now,
            )
            projects = [e for _, e in batch.items if isinstance(e, ProjectChanged)]
            scores = [e for _, e in batch.items if isinstance(e, ProjectScored)]
            resources = [e for _, e in batch.items if isinstance(e, ResourceUpdate)]
            portfolios = sorted(
                {e.portfolio for e in projects}
                | {e.portfolio for e in scores}
                | {e.portfolio for e in resources}
            )
            await uow.lock(*portfolios)
            await uow.plans.save_projects(
                newest(
                    projects,
                    lambda e: e.project_key,
                    lambda e: e.revision,
                    await uow.plans.project_revisions({e.project_key for e in projects}),
                )
            )
            await uow.plans.save_ranks(
                newest(
                    scores,
                    lambda e: e.project_key,
                    lambda e: e.ranking_version,
                    await uow.plans.ranking_versions({e.project_key for e in scores}),
                )
            )
            await uow.plans.save_resources(
                newest(
                    resources,
                    _resource_key,
                    lambda u: u.revision,
                    await uow.plans.resource_revisions({_resource_key(u) for u in resources}),
                )
            )
            out = list(batch.dead_letters)
            for portfolio in portfolios:
                out += await self._replan(uow, portfolio, await uow.plans.inputs(portfolio), now)
            await uow.emit(out)

    async def _replan(
        self, uow: CapacityUnitOfWork, portfolio: str, inputs: PortfolioInputs, now: datetime
    ) -> list[OutboxMessage]:
        result = plan(
            [
                _plan_project(key, withdrawn, state, rank)
                for key, withdrawn, state, rank in inputs.projects
            ],
            inputs.resources,
            self.horizon(now),
        )
        changed: list[tuple[str, StoredPlacement]] = []
        for key, placement in result.placements.items():
            stored = StoredPlacement(
                placement.status,
                month_from_index(placement.start) if placement.start is not None else None,
                month_from_index(placement.end) if placement.end is not None else None,
                placement.deferral,
            )
            if inputs.placements.get(key) != stored:
                changed.append((key, stored))
        if not changed:
            return []
        version = await uow.plans.next_plan_version(portfolio)
        await uow.plans.save_placements(portfolio, changed)
        topic = self._topics(Topic.PLANS)
        return [
            event_message(
                topic=topic,
                key=key,
                event=ProjectPlanned(
                    project_key=key,
                    portfolio=portfolio,
                    plan_version=version,
                    status=p.status,
                    start_month=p.start_month,
                    end_month=p.end_month,
                    deferral=p.deferral,
                ),
                event_type=ProjectPlanned.TYPE,
                event_id=f"capacity:{key}:{version}",
                source="pmo/capacity",
                time=now,
            )
            for key, p in changed
        ]


def _resource_key(update: ResourceUpdate) -> str:
    return f"{update.portfolio}/{update.resource_id}"


def _plan_project(key: str, withdrawn: bool, state: ProjectState, rank: int | None) -> PlanProject:
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
    )
