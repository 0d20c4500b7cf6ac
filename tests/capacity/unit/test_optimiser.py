"""The optimiser against known optima: textbook knapsacks (one role, one month), brute-force
enumeration of small portfolios, and the promise never to do worse than the greedy plan; the
neighbourhood search on hand-made plans it must improve, and on seeded portfolios it must not
spoil."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.capacity.domain.optimiser import (
    Model,
    build,
    exact,
    improve,
    objective_of,
    optimise,
    solve,
    starts_of,
    violations,
)
from services.capacity.domain.planner import Demand, Horizon, PlanProject, Resource, plan
from services.capacity.domain.synthetic import portfolio
from shared.contracts.inbound import Stage

JAN = 2027 * 12
ONE_MONTH = Horizon(JAN, 1)


def item(name: str, size: float, rank: int, *, months: int = 1, role: str = "r") -> PlanProject:
    return PlanProject(
        key=f"k/s/{name}",
        external_id=name,
        stage=Stage.PROPOSAL,
        withdrawn=False,
        rank=rank,
        earliest_start=JAN,
        deadline=None,
        demand=(Demand(role, size, 0, months),),
    )


def test_textbook_knapsack_capital_budgeting() -> None:
    # One role, one month, capacity 10: A (value 60, size 6), B (50, 5), C (50, 5). The
    # greedy plan takes the best-ranked A first, after which neither B nor C fits: 60. The
    # optimum leaves A out and takes B and C: 100.
    projects = [item("A", 6, 1), item("B", 5, 2), item("C", 5, 3)]
    priorities = {"k/s/A": 60.0, "k/s/B": 50.0, "k/s/C": 50.0}
    greedy, result = optimise(
        projects, [Resource("t", "r", 10, JAN, None)], ONE_MONTH, priorities, time_limit=5
    )
    assert {k for k, p in greedy.placements.items() if p.status == "planned"} == {"k/s/A"}
    assert result.greedy_objective == 60
    assert result.status == "optimal"
    assert result.objective == 100
    assert {k for k, s in result.starts.items() if s is not None} == {"k/s/B", "k/s/C"}
    assert result.gap == 0


def brute_force(
    projects: list[PlanProject], cap: float, horizon: Horizon, priorities: dict[str, float]
) -> float:
    """Every assignment of a start (or none) to every project, checked month by month. As in
    the planner, a project may start up to the horizon's last month; demand past the horizon
    is not checked (no capacity is known there)."""
    options = []
    for p in projects:
        assert p.earliest_start is not None
        starts: list[int | None] = [None]
        for s in range(p.earliest_start, horizon.end + 1):
            starts.append(s)
        options.append(starts)
    best = 0.0
    for choice in itertools.product(*options):
        used = [0.0] * horizon.months
        for p, start in zip(projects, choice, strict=True):
            if start is None:
                continue
            for (_, offset), fte in p.load().items():
                if start + offset <= horizon.end:
                    used[start + offset - horizon.start] += fte
        if all(u <= cap + 1e-9 for u in used):
            best = max(
                best,
                sum(
                    priorities[p.key]
                    for p, s in zip(projects, choice, strict=True)
                    if s is not None
                ),
            )
    return best


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.floats(1, 5), st.integers(1, 3), st.integers(0, 2), st.floats(1, 100)),
        min_size=2,
        max_size=5,
    ),
    st.floats(3, 8),
)
def test_the_optimum_matches_brute_force_on_small_portfolios(
    specs: list[tuple[float, int, int, float]], cap: float
) -> None:
    horizon = Horizon(JAN, 4)
    projects = []
    priorities = {}
    for n, (size, months, offset, value) in enumerate(specs):
        p = item(f"P{n}", round(size, 2), n + 1, months=months)
        p = PlanProject(p.key, p.external_id, p.stage, False, p.rank, JAN + offset, None, p.demand)
        if p.duration + offset > horizon.months:
            continue
        projects.append(p)
        priorities[p.key] = round(value, 3)
    if not projects:
        return
    _, result = optimise(
        projects, [Resource("t", "r", round(cap, 2), JAN, None)], horizon, priorities, time_limit=10
    )
    assert result.status == "optimal"
    assert result.objective == pytest.approx(
        brute_force(projects, round(cap, 2), horizon, priorities), abs=1e-6
    )
    assert result.objective + 1e-9 >= result.greedy_objective
    assert result.objective <= result.lp_bound + 1e-6


def test_dependencies_and_capacity_hold_in_the_optimised_plan() -> None:
    instance = portfolio(60, 12, seed=3)
    greedy, result = optimise(
        instance.projects, instance.resources, instance.horizon, instance.priorities, time_limit=5
    )
    assert result.objective + 1e-9 >= result.greedy_objective
    model = build(
        instance.projects, instance.resources, instance.horizon, instance.priorities, greedy
    )
    used: dict[tuple[str, int], float] = {}
    by_key = {p.key: p for p in instance.projects}
    by_external = {p.external_id: p for p in instance.projects}
    for key, start in result.starts.items():
        if start is None:
            continue
        p = by_key[key]
        for (role, offset), fte in p.load().items():
            month = start + offset
            if month in instance.horizon:
                used[(role, month)] = used.get((role, month), 0.0) + fte
        for dep in p.depends_on:
            q = by_external.get(dep)
            if q is not None and q.key in result.starts:
                q_start = result.starts[q.key]
                assert q_start is not None, f"{key} started without {dep}"
                assert start > q_start + q.duration - 1
    for cell, fte in used.items():
        assert fte <= model.free.get(cell, 0.0) + 1e-6


def test_the_result_is_never_worse_than_the_greedy_plan_even_when_time_runs_out() -> None:
    instance = portfolio(300, 40, seed=11)
    greedy = plan(instance.projects, instance.resources, instance.horizon)
    model = build(
        instance.projects, instance.resources, instance.horizon, instance.priorities, greedy
    )
    starts = starts_of(model, greedy)
    result = solve(model, starts, time_limit=0.5)
    assert result.objective + 1e-9 >= objective_of(model, starts)
    assert 0 <= result.gap <= 1


def shift_instance() -> tuple[list[PlanProject], Horizon, dict[str, float]]:
    """One role of 2 FTE over two months. A (rank 1, worth 50) may start in either month; B
    (rank 2, worth 40) only in the first. The greedy plan puts A first and defers B; moving A
    to the second month makes room for both: 90."""
    horizon = Horizon(JAN, 2)
    a = item("A", 2, 1)
    b = item("B", 2, 2)
    b = PlanProject(b.key, b.external_id, b.stage, False, b.rank, JAN, JAN, b.demand)
    return [a, b], horizon, {a.key: 50.0, b.key: 40.0}


def small_model(
    projects: list[PlanProject], horizon: Horizon, priorities: dict[str, float], cap: float
) -> tuple[Model, dict[str, int | None]]:
    resources = [Resource("t", "r", cap, horizon.start, None)]
    greedy = plan(projects, resources, horizon)
    model = build(projects, resources, horizon, priorities, greedy)
    return model, starts_of(model, greedy)


def test_the_search_shifts_a_project_to_make_room_for_another() -> None:
    projects, horizon, priorities = shift_instance()
    model, greedy_starts = small_model(projects, horizon, priorities, 2)
    assert objective_of(model, greedy_starts) == 50
    found = improve(model, greedy_starts, deadline=time.perf_counter() + 5, size=1)
    assert found.starts == {"k/s/A": JAN + 1, "k/s/B": JAN}
    assert objective_of(model, found.starts) == 90
    assert violations(model, found.starts) == []
    assert found.improvements >= 1


def test_the_search_finds_the_knapsack_optimum_and_proves_it_when_it_frees_everything() -> None:
    projects = [item("A", 6, 1), item("B", 5, 2), item("C", 5, 3)]
    priorities = {"k/s/A": 60.0, "k/s/B": 50.0, "k/s/C": 50.0}
    model, greedy_starts = small_model(projects, ONE_MONTH, priorities, 10)
    found = improve(model, greedy_starts, deadline=time.perf_counter() + 5, size=3)
    assert found.proven
    assert {k for k, s in found.starts.items() if s is not None} == {"k/s/B", "k/s/C"}


def test_solve_takes_the_search_path_on_large_models_and_stays_feasible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every model counts as large here, so the neighbourhood search does all the work.
    monkeypatch.setattr(exact, "EXACT_COLUMNS", 0)
    instance = portfolio(150, 30, seed=5)
    greedy = plan(instance.projects, instance.resources, instance.horizon)
    model = build(
        instance.projects, instance.resources, instance.horizon, instance.priorities, greedy
    )
    starts = starts_of(model, greedy)
    result = solve(model, starts, time_limit=3)
    assert result.solver == "cp-sat neighbourhood search"
    assert result.objective > objective_of(model, starts)
    assert result.objective <= result.lp_bound + 1e-6
    assert violations(model, result.starts) == []


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(30, 90))
def test_the_search_never_loses_value_nor_feasibility(seed: int, projects: int) -> None:
    instance = portfolio(projects, max(4, projects // 5), seed=seed)
    greedy = plan(instance.projects, instance.resources, instance.horizon)
    model = build(
        instance.projects, instance.resources, instance.horizon, instance.priorities, greedy
    )
    starts = starts_of(model, greedy)
    found = improve(model, starts, deadline=time.perf_counter() + 0.3, seed=seed, size=10)
    assert violations(model, found.starts) == []
    assert objective_of(model, found.starts) + 1e-9 >= objective_of(model, starts)


def test_one_worker_repeats_itself_for_a_given_seed() -> None:
    instance = portfolio(120, 24, seed=9)
    greedy = plan(instance.projects, instance.resources, instance.horizon)
    model = build(
        instance.projects, instance.resources, instance.horizon, instance.priorities, greedy
    )
    starts = starts_of(model, greedy)

    def run() -> dict[str, int | None]:
        steps = itertools.count()  # a clock that ticks once a step: exactly 25 steps
        return improve(
            model, starts, deadline=25.5, seed=3, clock=lambda: float(next(steps))
        ).starts

    assert run() == run()


def test_violations_name_what_breaks_a_plan() -> None:
    projects, horizon, priorities = shift_instance()
    model, _ = small_model(projects, horizon, priorities, 2)
    assert violations(model, {"k/s/A": JAN, "k/s/B": JAN}) == ["r over capacity in 24324 by 2.0000"]
    assert violations(model, {"k/s/A": JAN + 5, "k/s/B": None}) == [
        f"k/s/A cannot start in {JAN + 5}"
    ]
    first, then = item("Q", 1, 1), item("P", 1, 2)
    then = PlanProject(
        then.key, "P", then.stage, False, 2, JAN, None, then.demand, depends_on=("Q",)
    )
    model, _ = small_model([first, then], Horizon(JAN, 3), {first.key: 1.0, then.key: 1.0}, 10)
    assert violations(model, {"k/s/Q": JAN, "k/s/P": JAN + 1}) == []
    assert violations(model, {"k/s/Q": JAN, "k/s/P": JAN}) == [
        "k/s/P starts before its prerequisite ends"
    ]
