"""The 0/1 model the optimiser solves, built from the greedy plan, and the checks every plan it
returns must pass."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.capacity.domain.planner import (
    CANDIDATE_STAGES,
    EPSILON,
    Horizon,
    Plan,
    PlanProject,
    Resource,
    capacity,
)
from shared.contracts.inbound import Stage

MANDATORY_BONUS = 1e6
FTE_SCALE = 100  # CP-SAT works in integers: capacity in hundredths of an FTE
WEIGHT_SCALE = 1000
# A budget is one more cell of the model: a role no resource can have (an id has no slash),
# in the horizon's first month, whose capacity is the budget and which each column loads with
# its project's cost, both in money units of about a millionth of the budget (a power of ten:
# ``money_scale``). Every constraint, bound and search over cells then keeps within it. CP-SAT
# works in those units (an FTE of the cell is FTE_SCALE of them), a cost rounded up to one and
# the budget down: costs in whole units add up exactly, any other is rounded up by less than
# a millionth of the budget, so a plan that fits in units fits the budget.
BUDGET_ROLE = "/budget"


@dataclass(frozen=True, slots=True)
class Column:
    project: str
    start: int
    weight: float
    # (role, absolute month, FTE) inside the horizon; with a budget, (BUDGET_ROLE, the horizon's
    # start, the project's cost in money units: ``money_scale``) too
    load: tuple[tuple[str, int, float], ...]


@dataclass(slots=True)
class Model:
    columns: list[Column]
    free: dict[tuple[str, int], float]  # capacity left after committed work
    # (dependant column index, indexes of the prerequisite's columns that end before it starts)
    precedences: list[tuple[int, list[int]]]
    by_project: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Result:
    status: Literal["optimal", "feasible", "heuristic"]
    solver: str
    objective: float
    bound: float
    lp_bound: float
    greedy_objective: float
    seconds: float
    starts: dict[str, int | None]  # every candidate: its start month, or None if not started

    @property
    def gap(self) -> float:
        """Relative distance to the best bound known (0 when proven optimal)."""
        bound = min(self.bound, self.lp_bound)
        return 0.0 if bound <= EPSILON else max(0.0, (bound - self.objective) / bound)


def weight(project: PlanProject, priority: float) -> float:
    return priority + (MANDATORY_BONUS if project.mandatory else 0.0)


def build(
    projects: Sequence[PlanProject],
    resources: Sequence[Resource],
    horizon: Horizon,
    priorities: Mapping[str, float],
    greedy: Plan,
    *,
    budget: float | None = None,
    costs: Mapping[str, float | None] | None = None,
) -> Model:
    """The 0/1 model over the candidates the greedy plan considered. Committed work is fixed
    (it consumes capacity first); a candidate whose dependency is deferred outside the model
    (excluded, or caught in a cycle) cannot start, exactly as in the greedy plan.

    With a ``budget``, the candidates started cost at most that much in all (``costs``, by
    project key; committed work is spent already and not counted): a candidate whose cost is
    not known, or is more than the budget, cannot start."""
    cap = capacity(resources, horizon)
    free: dict[tuple[str, int], float] = {}
    for role, row in cap.items():
        for h, value in enumerate(row):
            free[(role, horizon.start + h)] = value
    by_external = {p.external_id: p for p in projects}
    for p in projects:
        placement = greedy.placements.get(p.key)
        if (
            placement is not None
            and placement.status == "committed"
            and placement.start is not None
        ):
            for (role, offset), fte in p.load().items():
                month = placement.start + offset
                if month in horizon:
                    free[(role, month)] = free.get((role, month), 0.0) - fte
    free = {k: max(0.0, v) for k, v in free.items()}
    if budget is not None:
        # Whole units, as CP-SAT counts them, so every check of the budget agrees with it.
        free[(BUDGET_ROLE, horizon.start)] = (
            math.floor(budget * money_scale(budget) + 1e-6) / FTE_SCALE
        )
    candidates = [
        p
        for p in projects
        if not p.withdrawn
        and p.stage in CANDIDATE_STAGES
        and not (
            (pl := greedy.placements.get(p.key)) is not None
            and pl.deferral is not None
            and pl.deferral.code == "dependency_cycle"
        )
    ]
    keys = {p.key for p in candidates}
    model = Model(columns=[], free=free, precedences=[])
    ends: dict[str, int] = {}
    for p in projects:
        placement = greedy.placements.get(p.key)
        if placement is not None and placement.status == "committed" and placement.end is not None:
            ends[p.key] = placement.end
    for p in candidates:
        after = horizon.start
        blocked = False
        for dep_id in p.depends_on:
            dep = by_external.get(dep_id)
            if dep is None or dep.key == p.key or dep.stage == Stage.DONE:
                continue
            if dep.key in ends:
                after = max(after, ends[dep.key] + 1)
            elif dep.key not in keys:
                blocked = True
        if blocked:
            continue
        lo = max(after, p.earliest_start if p.earliest_start is not None else after)
        hi = min(
            p.deadline - p.duration + 1 if p.deadline is not None else horizon.end, horizon.end
        )
        load = p.load()
        spend = _spend(budget, (costs or {}).get(p.key), horizon.start)
        columns = []
        for start in range(lo, hi + 1):
            cells = spend + tuple(
                (role, start + offset, fte)
                for (role, offset), fte in sorted(load.items())
                if start + offset in horizon
            )
            if any(fte > free.get((role, month), 0.0) + EPSILON for role, month, fte in cells):
                continue  # cannot fit even alone
            columns.append(len(model.columns))
            model.columns.append(Column(p.key, start, weight(p, priorities.get(p.key, 0.0)), cells))
        model.by_project[p.key] = columns
    for p in candidates:
        for dep_id in p.depends_on:
            dep = by_external.get(dep_id)
            if dep is None or dep.key not in model.by_project or dep.key == p.key:
                continue
            for j in model.by_project.get(p.key, []):
                start = model.columns[j].start
                before = [
                    i
                    for i in model.by_project[dep.key]
                    if model.columns[i].start + dep.duration - 1 < start
                ]
                model.precedences.append((j, before))
    return model


def _spend(
    budget: float | None, cost: float | None, month: int
) -> tuple[tuple[str, int, float], ...]:
    """What a project's columns load of the budget cell (``Column.load``): nothing without a
    budget or for a free project; more than the cell holds for a cost not known or larger than
    the budget, so that no column of the project is kept."""
    if budget is None or cost == 0:
        return ()
    if cost is None or cost > budget:
        return ((BUDGET_ROLE, month, math.inf),)
    return ((BUDGET_ROLE, month, math.ceil(cost * money_scale(budget) - 1e-6) / FTE_SCALE),)


def money_scale(budget: float) -> float:
    """Money units a unit of currency: a power of ten that puts ``budget`` between a million
    and ten million units (a budget below one unit of currency is taken as one)."""
    return 10.0 ** (6 - math.floor(math.log10(max(budget, 1.0))))


def objective_of(model: Model, starts: Mapping[str, int | None]) -> float:
    chosen = {(c.project, c.start): c.weight for c in model.columns}
    return sum(chosen.get((k, s), 0.0) for k, s in starts.items() if s is not None)


def cells_of(model: Model) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """Per role and month, the columns that load it and their FTE."""
    cells: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    for i, column in enumerate(model.columns):
        for role, month, fte in column.load:
            cells[(role, month)].append((i, fte))
    return cells


def fte_units(fte: float) -> int:
    """Demand in CP-SAT's integer units, rounded up: a plan that fits in units fits in FTE."""
    return math.ceil(fte * FTE_SCALE - 1e-6)


def capacity_units(fte: float) -> int:
    """Capacity in CP-SAT's integer units, rounded down."""
    return math.floor(fte * FTE_SCALE + 1e-6)


def scores(model: Model) -> list[int]:
    """Each column's objective coefficient in CP-SAT: its weight, then a tiny preference for
    earlier starts. The full model and every neighbourhood use the same coefficients."""
    first = min((c.start for c in model.columns), default=0)
    return [round(c.weight * WEIGHT_SCALE) * 1000 - (c.start - first) for c in model.columns]


def column_index(model: Model) -> dict[tuple[str, int], int]:
    return {(c.project, c.start): i for i, c in enumerate(model.columns)}


def violations(model: Model, starts: Mapping[str, int | None]) -> list[str]:
    """Why ``starts`` is not a plan of ``model`` (empty when it is): a start outside the
    project's columns, a role over capacity in a month, or a dependant started before its
    prerequisite ends."""
    index = column_index(model)
    chosen: set[int] = set()
    problems = []
    for key, start in starts.items():
        if start is None:
            continue
        i = index.get((key, start))
        if i is None:
            problems.append(f"{key} cannot start in {start}")
        else:
            chosen.add(i)
    used: dict[tuple[str, int], float] = defaultdict(float)
    for i in chosen:
        for role, month, fte in model.columns[i].load:
            used[(role, month)] += fte
    problems.extend(
        f"over the budget by {fte / max(model.free[(role, month)], EPSILON) - 1:.4%}"
        if role == BUDGET_ROLE
        else f"{role} over capacity in {month} by {fte - model.free.get((role, month), 0.0):.4f}"
        for (role, month), fte in sorted(used.items())
        if fte > model.free.get((role, month), 0.0) + 1e-6
    )
    problems.extend(
        f"{model.columns[j].project} starts before its prerequisite ends"
        for j, before in model.precedences
        if j in chosen and chosen.isdisjoint(before)
    )
    return problems
