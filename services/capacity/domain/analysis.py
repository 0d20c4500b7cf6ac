"""What a plan means for people: utilisation per role and month, conflicts in committed work,
and skill gaps. Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.capacity.domain.planner import EPSILON, Horizon, Plan, PlanProject

Load = dict[tuple[str, int], float]  # (role, absolute month) -> FTE


@dataclass(frozen=True, slots=True)
class Cell:
    role: str
    month: int
    capacity: float
    demand: float

    @property
    def utilisation(self) -> float | None:
        return self.demand / self.capacity if self.capacity > EPSILON else None


@dataclass(frozen=True, slots=True)
class Conflict:
    """Committed work over capacity: which projects cause it, and a way out."""

    role: str
    month: int
    demand: float
    capacity: float
    projects: tuple[str, ...]
    suggestion: str

    @property
    def shortfall(self) -> float:
        return self.demand - self.capacity


@dataclass(frozen=True, slots=True)
class SkillGap:
    """Demand of the portfolio's open projects — placed, committed, or deferred at their
    earliest start — that capacity does not cover: the FTE to hire or borrow."""

    role: str
    month: int
    demand: float
    capacity: float

    @property
    def gap(self) -> float:
        return self.demand - self.capacity

    @property
    def uncovered(self) -> bool:
        """No capacity of this role at all in this month."""
        return self.capacity <= EPSILON


def _load(projects: Iterable[tuple[PlanProject, int]], horizon: Horizon) -> Load:
    total: Load = defaultdict(float)
    for project, start in projects:
        for (role, offset), fte in project.load().items():
            month = start + offset
            if month in horizon:
                total[(role, month)] += fte
    return total


def _cap(plan: Plan, role: str, month: int, horizon: Horizon) -> float:
    row = plan.capacity.get(role)
    return row[month - horizon.start] if row else 0.0


def _placed(
    plan: Plan, projects: Sequence[PlanProject], statuses: frozenset[str]
) -> list[tuple[PlanProject, int]]:
    out = []
    for p in projects:
        placement = plan.placements.get(p.key)
        if placement is not None and placement.status in statuses and placement.start is not None:
            out.append((p, placement.start))
    return out


def utilisation(plan: Plan, projects: Sequence[PlanProject], horizon: Horizon) -> list[Cell]:
    """Capacity and planned demand (committed and planned work) per role and month."""
    load = _load(_placed(plan, projects, frozenset({"committed", "planned"})), horizon)
    roles = sorted(set(plan.capacity) | {role for role, _ in load})
    return [
        Cell(role, month, _cap(plan, role, month, horizon), round(load.get((role, month), 0.0), 6))
        for role in roles
        for month in range(horizon.start, horizon.end + 1)
    ]


def conflicts(
    plan: Plan,
    projects: Sequence[PlanProject],
    horizon: Horizon,
    ranks: Mapping[str, int | None] | None = None,
) -> list[Conflict]:
    """Months where committed work alone needs more of a role than there is."""
    committed = _placed(plan, projects, frozenset({"committed"}))
    load = _load(committed, horizon)
    rank_of = ranks or {p.key: p.rank for p, _ in committed}
    found = []
    for (role, month), demand in sorted(load.items(), key=lambda i: (i[0][1], i[0][0])):
        capacity = _cap(plan, role, month, horizon)
        if demand <= capacity + EPSILON:
            continue
        causing = sorted(
            p.key for p, start in committed if p.load().get((role, month - start), 0.0) > 0
        )
        lowest = max(causing, key=lambda k: (rank_of.get(k) is None, rank_of.get(k) or 0, k))
        shortfall = demand - capacity
        found.append(
            Conflict(
                role=role,
                month=month,
                demand=round(demand, 6),
                capacity=round(capacity, 6),
                projects=tuple(causing),
                suggestion=(
                    f"delay {lowest.rsplit('/', 1)[-1]}, the lowest-ranked of them, or add "
                    f"{shortfall:g} FTE of {role}"
                ),
            )
        )
    return found


def skill_gaps(plan: Plan, projects: Sequence[PlanProject], horizon: Horizon) -> list[SkillGap]:
    wanted = _placed(plan, projects, frozenset({"committed", "planned"}))
    for p in projects:
        placement = plan.placements.get(p.key)
        if placement is not None and placement.status == "deferred":
            wanted.append((p, max(horizon.start, p.earliest_start or horizon.start)))
    load = _load(wanted, horizon)
    gaps = []
    for (role, month), demand in sorted(load.items(), key=lambda i: (i[0][0], i[0][1])):
        capacity = _cap(plan, role, month, horizon)
        if demand > capacity + EPSILON:
            gaps.append(SkillGap(role, month, round(demand, 6), round(capacity, 6)))
    return gaps
