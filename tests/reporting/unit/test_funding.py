"""The funding line (services/reporting/funding.py): how far down a ranking a budget reaches,
by the line rule and the fill rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.reporting.funding import (
    currencies,
    currencies_other_than,
    funding_line,
)


def ranked(*costs: float | None, mandatory: int = 0) -> list[dict[str, Any]]:
    """Projects ranked 1, 2, ... with these costs, each worth ten times its cost (or 1 with no
    cost); the first ``mandatory`` of them mandatory."""
    return [
        {
            "rank": rank,
            "project_key": f"retail/jira/P{rank}",
            "cost": cost,
            "value": 10 * cost if cost is not None else 1.0,
            "mandatory": rank <= mandatory,
            "currency": None,
        }
        for rank, cost in enumerate(costs, 1)
    ]


def outcome(rows: list[dict[str, Any]], budget: float, rule: str) -> list[str | None]:
    line = funding_line(rows, budget, rule)  # type: ignore[arg-type]
    return [i["reason"] for i in line.items]


def test_the_line_stops_at_the_first_project_that_does_not_fit() -> None:
    rows = ranked(40, 50, 30, 5)
    assert outcome(rows, 100, "line") == [None, None, "over_budget", "below_line"]
    line = funding_line(rows, 100, "line")
    assert [i["cumulative_cost"] for i in line.items] == [40, 90, 90, 90]
    assert (line.funded.projects, line.funded.cost, line.funded.value) == (2, 90, 900)
    assert (line.unfunded.projects, line.unfunded.cost, line.unfunded.value) == (2, 35, 350)
    assert line.remaining == 10
    assert (line.last_funded_rank, line.first_unfunded_rank) == (2, 3)


def test_fill_funds_what_fits_below_a_project_that_did_not() -> None:
    rows = ranked(40, 50, 30, 5, 6)
    assert outcome(rows, 100, "fill") == [None, None, "over_budget", None, "over_budget"]
    line = funding_line(rows, 100, "fill")
    assert [i["cumulative_cost"] for i in line.items] == [40, 90, 90, 95, 95]
    assert line.remaining == 5
    assert (line.last_funded_rank, line.first_unfunded_rank) == (4, 3)


def test_a_cost_that_fits_exactly_is_funded_and_a_zero_budget_funds_only_free_projects() -> None:
    assert outcome(ranked(60, 40), 100, "line") == [None, None]
    assert funding_line(ranked(60, 40), 100, "line").remaining == 0
    assert outcome(ranked(0, 10, 0), 0, "line") == [None, "over_budget", "below_line"]
    assert outcome(ranked(0, 10, 0), 0, "fill") == [None, "over_budget", None]


def test_a_budget_equal_to_the_costs_in_cents_funds_them_all() -> None:
    for costs in ([0.1, 0.2, 0.3], [1193891.27, 4735878.3, 1774863.98, 3723923.39]):
        budget = sum(round(c * 100) for c in costs) / 100
        line = funding_line(ranked(*costs), budget, "line")
        assert [i["funded"] for i in line.items] == [True] * len(costs)
        assert line.remaining == 0
        assert line.funded.cost == budget


def test_a_project_with_no_cost_is_never_funded_and_does_not_stop_the_line() -> None:
    rows = ranked(10, None, 20)
    assert outcome(rows, 100, "line") == [None, "cost_unknown", None]
    line = funding_line(rows, 100, "line")
    assert line.cost_unknown == 1
    assert (line.unfunded.projects, line.unfunded.cost, line.unfunded.value) == (1, 0, 1.0)


def test_mandatory_projects_the_budget_does_not_reach_are_counted() -> None:
    rows = ranked(80, 30, 10, mandatory=2)
    line = funding_line(rows, 100, "fill")
    assert outcome(rows, 100, "fill") == [None, "over_budget", None]
    assert line.mandatory_unfunded == 1
    assert funding_line(rows, 200, "line").mandatory_unfunded == 0


def test_an_empty_ranking_funds_nothing() -> None:
    line = funding_line([], 100, "line")
    assert (line.funded.projects, line.unfunded.projects, line.remaining) == (0, 0, 100)
    assert (line.last_funded_rank, line.first_unfunded_rank) == (None, None)


def test_currencies_a_line_cannot_compare() -> None:
    rows = [{"currency": c} for c in ("EUR", None, "USD", "EUR")]
    assert currencies(rows) == ["EUR", "USD"]
    assert currencies_other_than(rows, None) == ["EUR", "USD"]
    assert currencies_other_than(rows, "EUR") == ["USD"]
    one = [{"currency": c} for c in ("EUR", None)]
    assert currencies_other_than(one, None) == []
    assert currencies_other_than(one, "EUR") == []
    assert currencies_other_than(one, "GBP") == ["EUR"]


costs = st.lists(st.one_of(st.none(), st.integers(0, 1000).map(float)), min_size=0, max_size=30)


@given(costs, st.integers(0, 5000).map(float))
def test_both_rules_keep_within_the_budget_and_fill_funds_all_the_line_does(
    cost_list: list[float | None], budget: float
) -> None:
    rows = ranked(*cost_list)
    line = funding_line(rows, budget, "line")
    fill = funding_line(rows, budget, "fill")
    for result in (line, fill):
        assert result.funded.cost <= budget
        assert result.remaining == budget - result.funded.cost
        assert result.funded.projects + result.unfunded.projects == len(rows)
    funded_by_line = {i["rank"] for i in line.items if i["funded"]}
    funded_by_fill = {i["rank"] for i in fill.items if i["funded"]}
    assert funded_by_line <= funded_by_fill
    # The line: the projects with a cost that it funds are the first ones, in rank order.
    priced = [i["rank"] for i in line.items if i["cost"] is not None]
    assert priced[: len(funded_by_line)] == sorted(funded_by_line)
    # Fill: a priced project left out did not fit what was left when its turn came.
    for item in fill.items:
        if item["reason"] == "over_budget":
            assert item["cost"] > budget - item["cumulative_cost"]
