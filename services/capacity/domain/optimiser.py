"""The exact portfolio optimiser: which candidates to start, and when, to maximise total
priority under per-role per-month capacity, windows and dependencies — a 0/1 programme solved
with OR-Tools CP-SAT (the choice is measured in docs/planning.md), time-boxed, warm-started from
the greedy plan, with the LP relaxation (HiGHS) as the bound it is measured against.

Variables x[p, s] = 1 when candidate p starts in month s of its window. Constraints:
  Σ_s x[p, s] ≤ 1                                  (start at most once)
  Σ_{p,s} load[p][r][m − s] · x[p, s] ≤ free[r][m]  (capacity left after committed work)
  x[p, s] ≤ Σ_{s' ≤ s − dur(q)} x[q, s']            (p after each candidate dependency q ends)
Objective: Σ w_p · x[p, s], where w_p is the priority (score or value, mandatory projects
first), with a tiny preference for earlier starts.
"""

from __future__ import annotations

import math
import time
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
    plan,
)
from shared.contracts.inbound import Stage

MANDATORY_BONUS = 1e6
FTE_SCALE = 100  # CP-SAT works in integers: capacity in hundredths of an FTE
WEIGHT_SCALE = 1000


@dataclass(frozen=True, slots=True)
class Column:
    project: str
    start: int
    weight: float
    load: tuple[tuple[str, int, float], ...]  # (role, absolute month, FTE) inside the horizon


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
) -> Model:
    """The 0/1 model over the candidates the greedy plan considered. Committed work is fixed
    (it consumes capacity first); a candidate whose dependency is deferred outside the model
    (excluded, or caught in a cycle) cannot start, exactly as in the greedy plan."""
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
        columns = []
        for start in range(lo, hi + 1):
            cells = tuple(
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


def objective_of(model: Model, starts: Mapping[str, int | None]) -> float:
    chosen = {(c.project, c.start): c.weight for c in model.columns}
    return sum(chosen.get((k, s), 0.0) for k, s in starts.items() if s is not None)


def _cells(model: Model) -> dict[tuple[str, int], list[tuple[int, float]]]:
    cells: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    for i, column in enumerate(model.columns):
        for role, month, fte in column.load:
            cells[(role, month)].append((i, fte))
    return cells


def _linear(
    model: Model, backend: str, *, integer: bool, time_limit: float
) -> tuple[float, dict[str, int | None], bool, list[float]]:
    """The model through OR-Tools' linear solver wrapper: the LP relaxation (GLOP) or the
    MILP (HiGHS). Returns (objective or bound, starts, proven optimal, column values)."""
    from ortools.linear_solver import pywraplp  # heavy; only the optimiser needs it

    solver = pywraplp.Solver.CreateSolver(backend)
    assert solver is not None, backend
    solver.SetTimeLimit(int(time_limit * 1000))
    if not model.columns:
        return 0.0, {}, True, []
    x = [
        solver.BoolVar(f"x{i}") if integer else solver.NumVar(0.0, 1.0, f"x{i}")
        for i in range(len(model.columns))
    ]
    for indexes in model.by_project.values():
        if len(indexes) > 1:
            solver.Add(solver.Sum([x[i] for i in indexes]) <= 1)
    for cell, entries in _cells(model).items():
        solver.Add(solver.Sum([f * x[i] for i, f in entries]) <= model.free.get(cell, 0.0))
    for j, before in model.precedences:
        solver.Add(x[j] <= solver.Sum([x[i] for i in before]))
    solver.Maximize(solver.Sum([c.weight * x[i] for i, c in enumerate(model.columns)]))
    status = solver.Solve()
    starts: dict[str, int | None] = dict.fromkeys(model.by_project)
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return math.inf, starts, False, []
    values = [v.solution_value() for v in x]
    if integer:
        for i, column in enumerate(model.columns):
            if values[i] > 0.5:
                starts[column.project] = column.start
    optimal = status == pywraplp.Solver.OPTIMAL
    return float(solver.Objective().Value()), starts, optimal, values


def lp_relaxation(model: Model, time_limit: float = 10.0) -> tuple[float, list[float]]:
    """The LP relaxation's optimum (no plan can score more) and its column values."""
    bound, _, _, values = _linear(model, "GLOP", integer=False, time_limit=time_limit)
    return bound, values


def solve_highs(
    model: Model, time_limit: float = 10.0
) -> tuple[float, dict[str, int | None], bool]:
    """The same model as a MILP for HiGHS (kept to compare solvers in the benchmark)."""
    value, starts, optimal, _ = _linear(model, "HIGHS", integer=True, time_limit=time_limit)
    return value, starts, optimal


def fill(
    model: Model, order: Sequence[str], preference: Mapping[int, float] | None = None
) -> dict[str, int | None]:
    """A feasible plan: projects in ``order``, each at its most preferred column that still
    fits (by ``preference``, highest first, else earliest), after its dependencies end."""
    free = dict(model.free)
    starts: dict[str, int | None] = dict.fromkeys(model.by_project)
    chosen: set[int] = set()
    needs: dict[int, list[list[int]]] = defaultdict(list)
    for j, before in model.precedences:
        needs[j].append(before)
    for key in order:
        columns = model.by_project.get(key, [])
        if preference is not None:
            columns = sorted(
                columns, key=lambda i: (-preference.get(i, 0.0), model.columns[i].start)
            )
        for i in columns:
            column = model.columns[i]
            if any(not chosen.intersection(before) for before in needs[i]):
                continue
            if all(fte <= free.get((r, m), 0.0) + EPSILON for r, m, fte in column.load):
                for role, month, fte in column.load:
                    free[(role, month)] = free.get((role, month), 0.0) - fte
                chosen.add(i)
                starts[key] = column.start
                break
    return starts


def _prerequisites_first(model: Model, order: Sequence[str]) -> list[str]:
    """``order`` with every project's prerequisites moved before it."""
    project_of = [c.project for c in model.columns]
    prerequisites: dict[str, set[str]] = defaultdict(set)
    for j, before in model.precedences:
        prerequisites[project_of[j]].update(project_of[i] for i in before)
    placed: set[str] = set()
    out: list[str] = []
    for first in order:
        stack = [(first, False)]
        while stack:
            key, expanded = stack.pop()
            if key in placed:
                continue
            if expanded:
                placed.add(key)
                out.append(key)
                continue
            stack.append((key, True))
            stack.extend((d, False) for d in sorted(prerequisites.get(key, ())) if d not in placed)
    return out


def heuristics(model: Model, lp_values: Sequence[float]) -> dict[str, dict[str, int | None]]:
    """Warm starts for the exact solver, guided by the LP relaxation. ``density``: highest
    priority per FTE-month first; ``lp``: what the LP relaxation chose most, at the start it
    liked best."""

    def density(key: str) -> float:
        columns = model.by_project[key]
        if not columns:
            return 0.0
        column = model.columns[columns[0]]
        return column.weight / (sum(f for _, _, f in column.load) or 1.0)

    taken: dict[str, float] = defaultdict(float)
    for i, value in enumerate(lp_values):
        taken[model.columns[i].project] += value
    by_density = sorted(model.by_project, key=lambda k: (-density(k), k))
    by_lp = sorted(model.by_project, key=lambda k: (-round(taken[k], 6), -density(k), k))
    return {
        "density": fill(model, _prerequisites_first(model, by_density)),
        "lp": fill(model, _prerequisites_first(model, by_lp), dict(enumerate(lp_values))),
    }


def solve(
    model: Model,
    greedy_starts: Mapping[str, int | None],
    *,
    time_limit: float = 10.0,
    workers: int = 2,
) -> Result:
    """Best plan found within ``time_limit`` seconds; never worse than the greedy plan."""
    from ortools.sat.python import cp_model  # heavy; only the optimiser needs it

    began = time.perf_counter()
    lp, lp_values = lp_relaxation(model, time_limit)
    greedy_value = objective_of(model, greedy_starts)
    warm = {"greedy": dict(greedy_starts), **heuristics(model, lp_values)}
    best_name, best_starts = max(warm.items(), key=lambda kv: objective_of(model, kv[1]))
    best_value = objective_of(model, best_starts)
    solver_model = cp_model.CpModel()
    x = [solver_model.new_bool_var(f"x{i}") for i in range(len(model.columns))]
    for indexes in model.by_project.values():
        if len(indexes) > 1:
            solver_model.add_at_most_one(x[i] for i in indexes)
    for cell, entries in _cells(model).items():
        limit = math.floor(model.free.get(cell, 0.0) * FTE_SCALE + 1e-6)
        solver_model.add(sum(math.ceil(f * FTE_SCALE - 1e-6) * x[i] for i, f in entries) <= limit)
    for j, before in model.precedences:
        solver_model.add(x[j] <= sum(x[i] for i in before))
    first = min((c.start for c in model.columns), default=0)
    solver_model.maximize(
        sum(
            (round(c.weight * WEIGHT_SCALE) * 1000 - (c.start - first)) * x[i]
            for i, c in enumerate(model.columns)
        )
    )
    index = {(c.project, c.start): i for i, c in enumerate(model.columns)}
    for key, start in best_starts.items():
        for i in model.by_project.get(key, []):
            solver_model.add_hint(x[i], start is not None and index.get((key, start)) == i)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.1, time_limit - (time.perf_counter() - began))
    solver.parameters.num_workers = workers
    status = solver.solve(solver_model)
    seconds = time.perf_counter() - began
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        starts: dict[str, int | None] = dict.fromkeys(model.by_project)
        for i, column in enumerate(model.columns):
            if solver.boolean_value(x[i]):
                starts[column.project] = column.start
        value = objective_of(model, starts)
        bound = solver.best_objective_bound / (WEIGHT_SCALE * 1000)
        if value + EPSILON >= best_value:
            optimal = status == cp_model.OPTIMAL
            return Result(
                "optimal" if optimal else "feasible",
                "cp-sat",
                value,
                value if optimal else min(bound, lp),
                lp,
                greedy_value,
                seconds,
                starts,
            )
    return Result(
        "heuristic",
        f"{best_name} (cp-sat found nothing better in time)",
        best_value,
        lp,
        lp,
        greedy_value,
        seconds,
        best_starts,
    )


def optimise(
    projects: Sequence[PlanProject],
    resources: Sequence[Resource],
    horizon: Horizon,
    priorities: Mapping[str, float],
    *,
    time_limit: float = 10.0,
) -> tuple[Plan, Result]:
    greedy = plan(projects, resources, horizon)
    model = build(projects, resources, horizon, priorities, greedy)
    return greedy, solve(model, starts_of(model, greedy), time_limit=time_limit)


def starts_of(model: Model, greedy: Plan) -> dict[str, int | None]:
    """The start month of each of the model's projects in ``greedy`` (None when not planned):
    the warm start the optimiser improves on."""
    return {
        key: greedy.placements[key].start if greedy.placements[key].status == "planned" else None
        for key in model.by_project
    }
