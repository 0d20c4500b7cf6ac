"""The funding line: how far down a portfolio's ranking a budget reaches. Pure.

A steering committee funds the ranking from the top until the money runs out, and argues about
the projects around the line. Two rules, both in rank order (mandatory projects rank first, so
they are funded first):

- ``line``: a project is funded when the cost of it and of every project ranked above it fits
  the budget. The first project that does not fit draws the line; nothing below it is funded,
  however small. This is the line a ranking is meant to be read with.
- ``fill``: each project is funded when its cost fits what is left, so smaller projects below
  one that did not fit are funded in its place: the budget spent as far as it goes, ranking
  second.

A project whose cost is not known is never funded and costs nothing (``cost_unknown``). Costs are
compared as they are, in the budget's currency: the caller refuses a ranking that mixes
currencies (``currencies_other_than``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Rule = Literal["line", "fill"]
# Why a project is not funded.
Unfunded = Literal["below_line", "over_budget", "cost_unknown"]


@dataclass(frozen=True, slots=True)
class Share:
    """Projects of one side of the line, their known cost and value."""

    projects: int
    cost: float
    value: float


@dataclass(frozen=True, slots=True)
class FundingLine:
    funded: Share
    unfunded: Share
    remaining: float  # of the budget, after what is funded
    last_funded_rank: int | None  # the line: the lowest-ranked project funded
    first_unfunded_rank: int | None  # the first project that did not fit, by rank
    cost_unknown: int  # projects whose cost is not known
    mandatory_unfunded: int  # mandatory projects the budget does not reach
    items: list[dict[str, Any]]  # the rows given, each with cumulative_cost, funded, reason


def funding_line(rows: Sequence[Mapping[str, Any]], budget: float, rule: Rule) -> FundingLine:
    """``rows`` (each with ``rank``, ``cost``, ``value`` and ``mandatory``) in rank order,
    against ``budget``. Each item gets ``cumulative_cost`` (the cost funded so far, itself
    included when funded), ``funded`` and ``reason`` (why not, or None)."""
    # In whole cents: a budget equal to the costs it funds, added up, fits them exactly.
    limit = _cents(budget)
    spent = 0
    crossed = False  # the line rule: a project did not fit, so nothing below is funded
    items: list[dict[str, Any]] = []
    for row in rows:
        cost = row["cost"]
        reason: Unfunded | None = None
        if cost is None:
            reason = "cost_unknown"
        elif crossed:
            reason = "below_line"
        elif spent + _cents(cost) > limit:
            reason = "over_budget"
            crossed = rule == "line"
        else:
            spent += _cents(cost)
        items.append(
            {**row, "cumulative_cost": spent / 100, "funded": reason is None, "reason": reason}
        )
    funded = [i for i in items if i["funded"]]
    unfunded = [i for i in items if not i["funded"]]
    return FundingLine(
        funded=_share(funded),
        unfunded=_share(unfunded),
        remaining=(limit - spent) / 100,
        last_funded_rank=funded[-1]["rank"] if funded else None,
        first_unfunded_rank=next((i["rank"] for i in items if i["reason"] == "over_budget"), None),
        cost_unknown=sum(i["reason"] == "cost_unknown" for i in items),
        mandatory_unfunded=sum(bool(i["mandatory"]) for i in unfunded),
        items=items,
    )


def currencies(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The currencies ``rows`` name, sorted."""
    return sorted({r["currency"] for r in rows if r["currency"] is not None})


def currencies_other_than(rows: Iterable[Mapping[str, Any]], currency: str | None) -> list[str]:
    """The currencies among ``rows`` that a line in ``currency`` cannot compare: every one but
    ``currency``; with no currency named, all of them when there are two or more. A project
    with no currency is taken to be in the budget's."""
    found = currencies(rows)
    if currency is not None:
        return [c for c in found if c != currency]
    return found if len(found) > 1 else []


def _cents(amount: float) -> int:
    return round(amount * 100)


def _share(items: Sequence[Mapping[str, Any]]) -> Share:
    return Share(
        projects=len(items),
        cost=sum(_cents(i["cost"] or 0.0) for i in items) / 100,
        value=sum(_cents(i["value"] or 0.0) for i in items) / 100,
    )
