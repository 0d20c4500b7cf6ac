"""The LP relaxation (the bound every plan is measured against) and the LP-guided plans the
search starts from."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.capacity.domain.optimiser.model import BUDGET_ROLE, Model, cells_of
from services.capacity.domain.planner import EPSILON


@dataclass(frozen=True, slots=True)
class Relaxation:
    bound: float  # the LP optimum: no plan scores more
    values: list[float]  # per column
    # Per column: how much its weight falls short of the capacity and slots it would use,
    # priced at the LP's duals (0 for columns the LP uses, negative for the others).
    reduced_costs: list[float]


def _linear(
    model: Model, backend: str, *, integer: bool, time_limit: float
) -> tuple[float, dict[str, int | None], bool, list[float], list[float]]:
    """The model through OR-Tools' linear solver wrapper: the LP relaxation (GLOP) or the
    MILP (HiGHS). Returns (objective or bound, starts, proven optimal, column values, reduced
    costs (LP only))."""
    from ortools.linear_solver import pywraplp  # heavy; only the optimiser needs it

    solver = pywraplp.Solver.CreateSolver(backend)
    assert solver is not None, backend
    solver.SetTimeLimit(int(time_limit * 1000))
    if not model.columns:
        return 0.0, {}, True, [], []
    x = [
        solver.BoolVar(f"x{i}") if integer else solver.NumVar(0.0, 1.0, f"x{i}")
        for i in range(len(model.columns))
    ]
    for indexes in model.by_project.values():
        if len(indexes) > 1:
            solver.Add(solver.Sum([x[i] for i in indexes]) <= 1)
    for cell, entries in cells_of(model).items():
        solver.Add(solver.Sum([f * x[i] for i, f in entries]) <= model.free.get(cell, 0.0))
    for j, before in model.precedences:
        solver.Add(x[j] <= solver.Sum([x[i] for i in before]))
    solver.Maximize(solver.Sum([c.weight * x[i] for i, c in enumerate(model.columns)]))
    status = solver.Solve()
    starts: dict[str, int | None] = dict.fromkeys(model.by_project)
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return math.inf, starts, False, [], []
    values = [v.solution_value() for v in x]
    reduced_costs = [] if integer else [v.reduced_cost() for v in x]
    if integer:
        for i, column in enumerate(model.columns):
            if values[i] > 0.5:
                starts[column.project] = column.start
    optimal = status == pywraplp.Solver.OPTIMAL
    return float(solver.Objective().Value()), starts, optimal, values, reduced_costs


def relaxation(model: Model, time_limit: float = 10.0) -> Relaxation:
    """The LP relaxation (GLOP): its optimum, column values and reduced costs."""
    bound, _, _, values, costs = _linear(model, "GLOP", integer=False, time_limit=time_limit)
    return Relaxation(bound, values, costs)


def lp_relaxation(model: Model, time_limit: float = 10.0) -> tuple[float, list[float]]:
    """The LP relaxation's optimum (no plan can score more) and its column values."""
    lp = relaxation(model, time_limit)
    return lp.bound, lp.values


def solve_highs(
    model: Model, time_limit: float = 10.0
) -> tuple[float, dict[str, int | None], bool]:
    """The same model as a MILP for HiGHS (kept to compare solvers in the benchmark)."""
    value, starts, optimal, _, _ = _linear(model, "HIGHS", integer=True, time_limit=time_limit)
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


def prerequisites_first(model: Model, order: Sequence[str]) -> list[str]:
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
    liked best; with a budget, ``value for money``: highest priority per unit of cost first."""

    def per(key: str, budget: bool) -> float:
        columns = model.by_project[key]
        if not columns:
            return 0.0
        column = model.columns[columns[0]]
        used = sum(f for r, _, f in column.load if (r == BUDGET_ROLE) == budget)
        return column.weight / (used or 1.0)

    def density(key: str) -> float:
        return per(key, budget=False)

    taken: dict[str, float] = defaultdict(float)
    for i, value in enumerate(lp_values):
        taken[model.columns[i].project] += value
    by_density = sorted(model.by_project, key=lambda k: (-density(k), k))
    by_lp = sorted(model.by_project, key=lambda k: (-round(taken[k], 6), -density(k), k))
    found = {
        "density": fill(model, prerequisites_first(model, by_density)),
        "lp": fill(model, prerequisites_first(model, by_lp), dict(enumerate(lp_values))),
    }
    if any(role == BUDGET_ROLE for role, _ in model.free):
        by_money = sorted(model.by_project, key=lambda k: (-per(k, budget=True), k))
        found["value for money"] = fill(model, prerequisites_first(model, by_money))
    return found
