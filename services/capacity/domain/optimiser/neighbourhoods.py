"""Large-neighbourhood search: improve a plan by re-solving small parts of it exactly.

Each step frees a few dozen projects that compete for the same roles and months (a walk over
role-months from a random one, through the projects that could load them), fixes every other
project where the plan has it, and solves what is left — the freed projects' columns against
the capacity the fixed ones leave — with CP-SAT, warm-started from the plan. The answer
replaces the freed part only when it scores more, so the plan improves monotonically and stays
feasible. Neighbourhoods grow while CP-SAT proves them optimal within a step's time and shrink
when it does not, so steps stay short (tens of milliseconds) whatever the instance.

Neighbourhoods include only the columns the LP relaxation prices as nearly paying for
themselves (and the plan's own): far fewer variables per step, so CP-SAT proves larger
neighbourhoods in the same time. The final plan can still use any column, and a step that frees
every project (small models) solves the whole model and proves the plan optimal.

One thread: steps are short and sequential, so the search loses nothing to a busy machine but
the time it does not get.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.capacity.domain.optimiser.model import (
    Model,
    capacity_units,
    column_index,
    fte_units,
    scores,
)

INITIAL_SIZE = 30.0  # projects freed per step, at first
MIN_SIZE = 8.0
GROW, SHRINK = 1.05, 1.25  # neighbourhood size after a step proven optimal, or not
STEP_WORK = 0.05  # CP-SAT's deterministic time limit per step (about as many seconds)
MIN_STEP_SECONDS = 0.02
SPREAD = 0.3  # chance that the walk continues through each role-month of a freed project
REDUCED_COST_SLACK = 0.05  # of the median column weight; see _promising


@dataclass(frozen=True, slots=True)
class _Index:
    """The model in flat arrays, computed once per search. Capacity and demand are in CP-SAT's
    integer units (demand rounded up, capacity down), so whatever fits in units fits in FTE."""

    capacity: list[int]  # per cell (role-month)
    units: list[list[tuple[int, int]]]  # per column: (cell, demand)
    score: list[int]  # per column: CP-SAT's objective coefficient
    project: list[str]  # per column
    projects: list[str]  # projects with at least one column, in the model's order
    footprint: dict[str, list[int]]  # cells any column of the project can load
    on_cell: list[list[str]]  # projects that can load each cell
    busy: list[int]  # cells some project can load
    links: dict[str, list[int]]  # precedences each project takes part in


def _index(model: Model) -> _Index:
    cells = sorted(model.free)
    cell_of = {cell: k for k, cell in enumerate(cells)}
    units = [[(cell_of[(r, m)], fte_units(f)) for r, m, f in c.load] for c in model.columns]
    projects = [p for p, columns in model.by_project.items() if columns]
    footprint = {p: sorted({k for i in model.by_project[p] for k, _ in units[i]}) for p in projects}
    on_cell: list[list[str]] = [[] for _ in cells]
    for p in projects:
        for k in footprint[p]:
            on_cell[k].append(p)
    project = [c.project for c in model.columns]
    links: dict[str, list[int]] = defaultdict(list)
    for e, (j, before) in enumerate(model.precedences):
        for p in sorted({project[j], *(project[i] for i in before)}):
            links[p].append(e)
    return _Index(
        capacity=[capacity_units(model.free[cell]) for cell in cells],
        units=units,
        score=scores(model),
        project=project,
        projects=projects,
        footprint=footprint,
        on_cell=on_cell,
        busy=[k for k, projects in enumerate(on_cell) if projects],
        links=dict(links),
    )


@dataclass(frozen=True, slots=True)
class Improvement:
    starts: dict[str, int | None]
    proven: bool  # a step freed every project and proved the plan optimal
    steps: int
    improvements: int


def _walk(ix: _Index, rng: random.Random, size: int) -> list[str]:
    """Up to ``size`` projects reached from a random role-month through shared role-months."""
    first = rng.choice(ix.busy)
    frontier, seen_cells = [first], {first}
    freed: list[str] = []
    seen: set[str] = set()
    while frontier and len(freed) < size:
        cell = frontier.pop(rng.randrange(len(frontier)))
        projects = list(ix.on_cell[cell])
        rng.shuffle(projects)
        for p in projects:
            if p in seen:
                continue
            seen.add(p)
            freed.append(p)
            if len(freed) >= size:
                break
            for k in ix.footprint[p]:
                if k not in seen_cells and rng.random() < SPREAD:
                    seen_cells.add(k)
                    frontier.append(k)
    return freed


def _resolve(
    model: Model,
    ix: _Index,
    chosen: set[int],
    used: list[int],
    freed: list[str],
    *,
    allowed: list[bool] | None,
    time_limit: float,
    work: float | None,
    seed: int,
) -> tuple[list[int], bool] | None:
    """The best columns for ``freed`` with every other project fixed as in ``chosen`` (``used``:
    demand per cell of ``chosen``), and whether CP-SAT proved them best; None when it found
    nothing. Only ``allowed`` columns, and those in ``chosen``, are considered (all when None)."""
    from ortools.sat.python import cp_model  # heavy; only the optimiser needs it

    free_set = set(freed)
    residual = list(used)
    for i in chosen:
        if ix.project[i] in free_set:
            for k, u in ix.units[i]:
                residual[k] -= u
    limit = {k: ix.capacity[k] - residual[k] for p in freed for k in ix.footprint[p]}
    columns = [
        i
        for p in freed
        for i in model.by_project[p]
        if (allowed is None or allowed[i] or i in chosen)
        and all(u <= limit[k] for k, u in ix.units[i])
    ]
    sub = cp_model.CpModel()
    x = {i: sub.new_bool_var(f"x{i}") for i in columns}
    by_project: dict[str, list[int]] = defaultdict(list)
    rows: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i in columns:
        by_project[ix.project[i]].append(i)
        for k, u in ix.units[i]:
            rows[k].append((i, u))
    for group in by_project.values():
        if len(group) > 1:
            sub.add_at_most_one(x[i] for i in group)
    for k, row in rows.items():
        if sum(u for _, u in row) > limit[k]:
            terms = [x[i] for i, _ in row]
            sub.add(cp_model.LinearExpr.weighted_sum(terms, [u for _, u in row]) <= limit[k])
    for e in sorted({e for p in freed for e in ix.links.get(p, ())}):
        j, before = model.precedences[e]
        if any(i in chosen and ix.project[i] not in free_set for i in before):
            continue  # a fixed prerequisite already ends in time
        free_before = [x[i] for i in before if i in x]
        if j in x:
            sub.add(x[j] <= sum(free_before))
        elif ix.project[j] not in free_set and j in chosen:
            if not free_before:
                return None
            sub.add(sum(free_before) >= 1)
    sub.maximize(cp_model.LinearExpr.weighted_sum(list(x.values()), [ix.score[i] for i in x]))
    for i in columns:
        sub.add_hint(x[i], i in chosen)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    if work is not None:
        solver.parameters.max_deterministic_time = work
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    # Neighbourhoods are small: presolve and symmetry detection cost more than they save, and
    # the stronger linear relaxation pays for itself on these knapsack rows.
    solver.parameters.cp_model_presolve = False
    solver.parameters.symmetry_level = 0
    solver.parameters.linearization_level = 2
    status = solver.solve(sub)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return [i for i in columns if solver.boolean_value(x[i])], status == cp_model.OPTIMAL


def _promising(model: Model, reduced_costs: Sequence[float] | None) -> list[bool] | None:
    """The columns worth a place in a neighbourhood: those the LP relaxation prices within
    ``REDUCED_COST_SLACK`` of a typical weight of paying for themselves. Leaving the others out
    keeps steps small enough for CP-SAT to prove quickly, so neighbourhoods can be larger; a
    plan's own columns always stay in, so no step can lose what the plan has."""
    if not reduced_costs or len(reduced_costs) != len(model.columns):
        return None
    slack = REDUCED_COST_SLACK * statistics.median(c.weight for c in model.columns)
    return [cost >= -slack for cost in reduced_costs]


class _Plan:
    """The plan being improved: its columns and the demand they put on each cell."""

    def __init__(self, model: Model, ix: _Index, starts: Mapping[str, int | None]) -> None:
        self.model, self.ix = model, ix
        index = column_index(model)
        self.chosen = {
            index[(k, s)] for k, s in starts.items() if s is not None and (k, s) in index
        }
        self.used = [0] * len(ix.capacity)
        for i in self.chosen:
            for k, u in ix.units[i]:
                self.used[k] += u

    def offer(self, freed: list[str], new: list[int]) -> bool:
        """Give the freed projects the columns ``new`` if that scores more; the answer of a
        step fits by construction, and is checked again (capacity, dependencies) all the same."""
        ix, free_set = self.ix, set(freed)
        old = [i for i in self.chosen if ix.project[i] in free_set]
        if sum(ix.score[i] for i in new) <= sum(ix.score[i] for i in old):
            return False
        used = {k: self.used[k] for i in (*old, *new) for k, _ in ix.units[i]}
        for i in old:
            for k, u in ix.units[i]:
                used[k] -= u
        for i in new:
            for k, u in ix.units[i]:
                used[k] += u
        if any(u > ix.capacity[k] for k, u in used.items()):
            return False
        chosen = (self.chosen - set(old)) | set(new)
        for e in {e for p in freed for e in ix.links.get(p, ())}:
            j, before = self.model.precedences[e]
            if j in chosen and chosen.isdisjoint(before):
                return False
        self.chosen = chosen
        for k, u in used.items():
            self.used[k] = u
        return True

    def starts(self) -> dict[str, int | None]:
        out: dict[str, int | None] = dict.fromkeys(self.model.by_project)
        for i in self.chosen:
            out[self.ix.project[i]] = self.model.columns[i].start
        return out


def improve(
    model: Model,
    starts: Mapping[str, int | None],
    *,
    deadline: float,
    seed: int = 0,
    size: float = INITIAL_SIZE,
    clock: Callable[[], float] = time.perf_counter,
    reduced_costs: Sequence[float] | None = None,
) -> Improvement:
    """``starts`` improved by large-neighbourhood search until ``clock()`` reaches
    ``deadline``; never worse, and feasible whenever ``starts`` is. ``reduced_costs`` (the LP
    relaxation's, per column) narrow the neighbourhoods to promising columns. Reproducible for
    a given ``seed`` and number of steps: each step's limit is CP-SAT's deterministic time."""
    ix = _index(model)
    current = _Plan(model, ix, starts)
    allowed = _promising(model, reduced_costs)
    rng = random.Random(seed)  # noqa: S311 - not for secrets
    steps = improvements = 0
    while ix.projects:
        left = deadline - clock()
        if left < MIN_STEP_SECONDS:
            break
        steps += 1
        whole = round(size) >= len(ix.projects)
        freed = list(ix.projects) if whole else _walk(ix, rng, round(size))
        answer = _resolve(
            model,
            ix,
            current.chosen,
            current.used,
            freed,
            allowed=None if whole else allowed,
            time_limit=left,
            work=None if whole else STEP_WORK,
            seed=steps,
        )
        if answer is None:
            size = max(MIN_SIZE, size / SHRINK)
            continue
        new, optimal = answer
        improvements += current.offer(freed, new)
        if whole and optimal:
            return Improvement(current.starts(), True, steps, improvements)
        size = min(len(ix.projects), size * GROW) if optimal else max(MIN_SIZE, size / SHRINK)
    return Improvement(current.starts(), False, steps, improvements)
