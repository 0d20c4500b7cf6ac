"""The optimiser's entry points: the LP bound, the warm starts, then CP-SAT on the whole model
where that is tractable and large-neighbourhood search where it is not."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from services.capacity.domain.optimiser.model import (
    WEIGHT_SCALE,
    Model,
    Result,
    build,
    capacity_units,
    cells_of,
    column_index,
    fte_units,
    objective_of,
    scores,
    violations,
)
from services.capacity.domain.optimiser.neighbourhoods import improve
from services.capacity.domain.optimiser.relaxation import (
    fill,
    heuristics,
    prerequisites_first,
    relaxation,
)
from services.capacity.domain.planner import EPSILON, Horizon, Plan, PlanProject, Resource, plan

# Up to this many columns CP-SAT gets the whole model first (the 100-project benchmark has
# about 250 and is proven optimal in about a second; the 1,000-project one has about 6,500 and
# CP-SAT's own search barely moves its warm start in ten seconds on two cores).
EXACT_COLUMNS = 2000
EXACT_SHARE = 0.5  # of the time left, before the neighbourhood search takes over


def _exact(
    model: Model, hint: Mapping[str, int | None], *, time_limit: float, workers: int
) -> tuple[dict[str, int | None], bool, float] | None:
    """CP-SAT on the whole model: (starts, proven optimal, bound), None if it found no plan."""
    from ortools.sat.python import cp_model  # heavy; only the optimiser needs it

    solver_model = cp_model.CpModel()
    x = [solver_model.new_bool_var(f"x{i}") for i in range(len(model.columns))]
    for indexes in model.by_project.values():
        if len(indexes) > 1:
            solver_model.add_at_most_one(x[i] for i in indexes)
    for cell, entries in cells_of(model).items():
        limit = capacity_units(model.free.get(cell, 0.0))
        solver_model.add(sum(fte_units(f) * x[i] for i, f in entries) <= limit)
    for j, before in model.precedences:
        solver_model.add(x[j] <= sum(x[i] for i in before))
    solver_model.maximize(sum(s * x[i] for i, s in enumerate(scores(model))))
    index = column_index(model)
    for key, start in hint.items():
        for i in model.by_project.get(key, []):
            solver_model.add_hint(x[i], start is not None and index.get((key, start)) == i)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.1, time_limit)
    solver.parameters.num_workers = workers
    status = solver.solve(solver_model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    starts: dict[str, int | None] = dict.fromkeys(model.by_project)
    for i, column in enumerate(model.columns):
        if solver.boolean_value(x[i]):
            starts[column.project] = column.start
    bound = solver.best_objective_bound / (WEIGHT_SCALE * 1000)
    return starts, status == cp_model.OPTIMAL, bound


def solve(
    model: Model,
    greedy_starts: Mapping[str, int | None],
    *,
    time_limit: float = 10.0,
    workers: int = 2,
    seed: int = 0,
) -> Result:
    """Best plan found within ``time_limit`` seconds; never worse than the greedy plan (or,
    when that is over the model's budget, than its projects kept while they fit: ``within``).

    Small models go to CP-SAT whole (``workers`` threads) for half the time left, which
    usually proves the optimum; what it has not proven by then, and every large model, is
    improved by large-neighbourhood search (one thread, seeded by ``seed``) until the time
    runs out."""
    # Imported before the clock starts, as a running service has it loaded already.
    from ortools.sat.python import cp_model  # noqa: F401 - heavy; only the optimiser needs it

    began = time.perf_counter()
    deadline = began + time_limit
    relaxed = relaxation(model, time_limit)
    lp, lp_values = relaxed.bound, relaxed.values
    greedy_value = objective_of(model, greedy_starts)
    warm = {"greedy": within(model, greedy_starts), **heuristics(model, lp_values)}
    best_name, best_starts = max(warm.items(), key=lambda kv: objective_of(model, kv[1]))
    warm_value = objective_of(model, best_starts)
    starts, bound, solver = dict(best_starts), lp, best_name
    if len(model.columns) <= EXACT_COLUMNS:
        left = deadline - time.perf_counter()
        exact = _exact(model, best_starts, time_limit=left * EXACT_SHARE, workers=workers)
        if exact is not None and objective_of(model, exact[0]) + EPSILON >= warm_value:
            starts, optimal, exact_bound = exact
            bound, solver = min(exact_bound, lp), "cp-sat"
            if optimal:
                value = objective_of(model, starts)
                return Result(
                    "optimal", solver, value, value, lp, greedy_value, _since(began), starts
                )
    found = improve(
        model,
        starts,
        deadline=deadline,
        seed=seed,
        reduced_costs=relaxed.reduced_costs,
    )
    # Every step keeps the plan feasible; the check costs milliseconds and guards the promise.
    if found.improvements and not violations(model, found.starts):
        starts, solver = found.starts, "cp-sat neighbourhood search"
    value = objective_of(model, starts)
    if found.proven:
        return Result("optimal", solver, value, value, lp, greedy_value, _since(began), starts)
    if value > warm_value + EPSILON:
        return Result("feasible", solver, value, bound, lp, greedy_value, _since(began), starts)
    return Result(
        "heuristic",
        f"{best_name} (cp-sat found nothing better in time)",
        warm_value,
        lp,
        lp,
        greedy_value,
        _since(began),
        dict(best_starts),
    )


def within(model: Model, starts: Mapping[str, int | None]) -> dict[str, int | None]:
    """``starts`` when they are a plan of ``model``; else (the greedy plan over a budget the
    model has) its started projects in order of weight, each at its start while it still
    fits, the rest not started."""
    if not violations(model, starts):
        return dict(starts)
    index = column_index(model)
    started = {k: s for k, s in starts.items() if s is not None and (k, s) in index}
    order = sorted(started, key=lambda k: (-model.columns[index[(k, started[k])]].weight, k))
    preferred = {index[(k, s)]: 1.0 for k, s in started.items()}
    return fill(model, prerequisites_first(model, order), preferred)


def _since(began: float) -> float:
    return time.perf_counter() - began


def optimise(
    projects: Sequence[PlanProject],
    resources: Sequence[Resource],
    horizon: Horizon,
    priorities: Mapping[str, float],
    *,
    time_limit: float = 10.0,
    budget: float | None = None,
    costs: Mapping[str, float | None] | None = None,
) -> tuple[Plan, Result]:
    """The greedy plan, and the optimiser's within ``time_limit`` seconds (and, with a
    ``budget``, within it: ``build``)."""
    greedy = plan(projects, resources, horizon)
    model = build(projects, resources, horizon, priorities, greedy, budget=budget, costs=costs)
    return greedy, solve(model, starts_of(model, greedy), time_limit=time_limit)


def starts_of(model: Model, greedy: Plan) -> dict[str, int | None]:
    """The start month of each of the model's projects in ``greedy`` (None when not planned):
    the warm start the optimiser improves on."""
    return {
        key: greedy.placements[key].start if greedy.placements[key].status == "planned" else None
        for key in model.by_project
    }
