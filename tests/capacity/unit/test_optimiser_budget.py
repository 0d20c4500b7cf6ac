"""The optimiser within a budget: the candidates it starts cost at most the budget in all, beside
capacity, windows and dependencies. Against textbook capital budgeting, brute force on small
portfolios, the edge cases of costs, and seeded portfolios through the neighbourhood search."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.capacity.domain.optimiser import build, exact, objective_of, optimise, solve
from services.capacity.domain.optimiser.exact import starts_of, within
from services.capacity.domain.optimiser.model import violations
from services.capacity.domain.planner import Horizon, PlanProject, Resource, plan
from services.capacity.domain.synthetic import portfolio
from tests.capacity.unit.test_optimiser import JAN, ONE_MONTH, item

PLENTY = [Resource("t", "r", 1000, JAN, None)]


def spent(starts: dict[str, int | None], costs: dict[str, float | None]) -> float:
    return sum(costs[k] or 0.0 for k, s in starts.items() if s is not None)


def test_capital_budgeting_with_people_to_spare() -> None:
    # Capacity for all three; a budget of 10: A (value 60, cost 6), B (50, 5), C (50, 5). The
    # greedy plan starts all three (16, over the budget); within it the optimum is B and C.
    projects = [item("A", 1, 1), item("B", 1, 2), item("C", 1, 3)]
    priorities = {"k/s/A": 60.0, "k/s/B": 50.0, "k/s/C": 50.0}
    costs: dict[str, float | None] = {"k/s/A": 6.0, "k/s/B": 5.0, "k/s/C": 5.0}
    greedy, result = optimise(
        projects, PLENTY, ONE_MONTH, priorities, time_limit=5, budget=10, costs=costs
    )
    assert all(p.status == "planned" for p in greedy.placements.values())
    assert result.status == "optimal"
    assert result.objective == 100
    assert {k for k, s in result.starts.items() if s is not None} == {"k/s/B", "k/s/C"}
    assert result.objective <= result.lp_bound + 1e-6
    # Without a budget the same call starts all three.
    _, free = optimise(projects, PLENTY, ONE_MONTH, priorities, time_limit=5)
    assert free.objective == 160


def test_what_cannot_be_paid_for_is_not_started() -> None:
    # Unknown cost, a cost above the budget: never started. A free project: started even with
    # a budget of nothing.
    projects = [item("Unknown", 1, 1), item("Dear", 1, 2), item("Free", 1, 3), item("Fit", 1, 4)]
    priorities = {p.key: 10.0 for p in projects}
    costs: dict[str, float | None] = {
        "k/s/Unknown": None,
        "k/s/Dear": 101.0,
        "k/s/Free": 0.0,
        "k/s/Fit": 100.0,
    }
    _, result = optimise(projects, PLENTY, ONE_MONTH, priorities, budget=100, costs=costs)
    assert {k for k, s in result.starts.items() if s is not None} == {"k/s/Free", "k/s/Fit"}
    _, broke = optimise(projects, PLENTY, ONE_MONTH, priorities, budget=0, costs=costs)
    assert {k for k, s in broke.starts.items() if s is not None} == {"k/s/Free"}


def test_violations_name_a_plan_over_the_budget() -> None:
    projects = [item("A", 1, 1), item("B", 1, 2)]
    greedy = plan(projects, PLENTY, ONE_MONTH)
    costs: dict[str, float | None] = {"k/s/A": 60.0, "k/s/B": 60.0}
    model = build(projects, PLENTY, ONE_MONTH, {}, greedy, budget=100, costs=costs)
    both = {"k/s/A": JAN, "k/s/B": JAN}
    assert violations(model, both) == ["over the budget by 20.0000%"]
    # The greedy plan kept to what fits, in order of weight, is a plan of the model.
    kept = within(model, both)
    assert violations(model, kept) == []
    assert sum(s is not None for s in kept.values()) == 1


def brute_force(
    projects: list[PlanProject],
    cap: float,
    horizon: Horizon,
    priorities: dict[str, float],
    costs: dict[str, float | None],
    budget: float,
) -> float:
    """Every start (or none) for every project, checked month by month and against the
    budget, as in test_optimiser.brute_force."""
    options = [[None, *range(p.earliest_start or horizon.start, horizon.end + 1)] for p in projects]
    best = 0.0
    for choice in itertools.product(*options):
        chosen = [(p, s) for p, s in zip(projects, choice, strict=True) if s is not None]
        if any(costs[p.key] is None for p, _ in chosen):
            continue
        if sum(costs[p.key] or 0.0 for p, _ in chosen) > budget + 1e-9:
            continue
        used = [0.0] * horizon.months
        for p, start in chosen:
            for (_, offset), fte in p.load().items():
                if start + offset <= horizon.end:
                    used[start + offset - horizon.start] += fte
        if all(u <= cap + 1e-9 for u in used):
            best = max(best, sum(priorities[p.key] for p, _ in chosen))
    return best


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.floats(1, 5),
            st.integers(1, 3),
            st.floats(1, 100),
            st.one_of(st.none(), st.integers(0, 50).map(float)),
        ),
        min_size=2,
        max_size=5,
    ),
    st.floats(3, 8),
    st.integers(0, 120).map(float),
)
def test_the_optimum_within_a_budget_matches_brute_force(
    specs: list[tuple[float, int, float, float | None]], cap: float, budget: float
) -> None:
    horizon = Horizon(JAN, 3)
    projects = [item(f"P{n}", round(s[0], 2), n + 1, months=s[1]) for n, s in enumerate(specs)]
    priorities = {p.key: round(s[2], 3) for p, s in zip(projects, specs, strict=True)}
    costs = {p.key: s[3] for p, s in zip(projects, specs, strict=True)}
    resources = [Resource("t", "r", round(cap, 2), JAN, None)]
    _, result = optimise(
        projects, resources, horizon, priorities, time_limit=10, budget=budget, costs=costs
    )
    assert result.status == "optimal"
    assert result.objective == pytest.approx(
        brute_force(projects, round(cap, 2), horizon, priorities, costs, budget), abs=1e-6
    )
    assert spent(result.starts, costs) <= budget + 1e-9
    assert result.objective <= result.lp_bound + 1e-6


@pytest.mark.parametrize("search_only", [False, True])
def test_seeded_portfolios_keep_within_the_budget(
    monkeypatch: pytest.MonkeyPatch, search_only: bool
) -> None:
    """150 projects over 30 resources, costs of 1 to 100, a budget of a fifth of the greedy
    plan's spending: the optimiser's plan, by CP-SAT whole or by the neighbourhood search
    alone, keeps within the budget and everything else, and is worth no less than the greedy
    plan cut to the budget."""
    if search_only:
        monkeypatch.setattr(exact, "EXACT_COLUMNS", 0)
    instance = portfolio(150, 30, seed=7)
    rng = random.Random(7)
    costs: dict[str, float | None] = {p.key: float(rng.randint(1, 100)) for p in instance.projects}
    greedy = plan(instance.projects, instance.resources, instance.horizon)
    unbounded = build(
        instance.projects, instance.resources, instance.horizon, instance.priorities, greedy
    )
    budget = spent(starts_of(unbounded, greedy), costs) / 5
    model = build(
        instance.projects,
        instance.resources,
        instance.horizon,
        instance.priorities,
        greedy,
        budget=budget,
        costs=costs,
    )
    starts = starts_of(model, greedy)
    assert violations(model, starts) != []  # the greedy plan is over the budget
    result = solve(model, starts, time_limit=3)
    assert violations(model, result.starts) == []
    assert spent(result.starts, costs) <= budget + 1e-6
    assert result.objective + 1e-9 >= objective_of(model, within(model, starts))
    assert result.objective <= result.lp_bound + 1e-6
