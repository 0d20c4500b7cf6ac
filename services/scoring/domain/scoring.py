"""Scores with their explanations, for each method. Pure: ``as_of`` (the month urgency is
measured from) comes in as an argument."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from services.scoring.domain.ahp import priorities
from services.scoring.domain.inputs import ScoringInputs
from shared.contracts.scoring import (
    AhpModel,
    Criterion,
    Scales,
    ScoringModel,
    WeightedModel,
    WsjfModel,
)

# Lower raw values are better for these; portfolio normalisation inverts them.
LOWER_IS_BETTER = frozenset({"cost", "risk", "urgency"})
# What an unknown input counts as: no claimed value is worth nothing, an unknown cost or
# risk is taken as average.
MISSING: dict[str, float] = {
    "strategic_fit": 0.0,
    "value": 0.0,
    "cost": 0.5,
    "value_for_money": 0.0,
    "risk": 0.5,
    "urgency": 0.0,
    "mandatory": 0.0,
}


class Part(TypedDict):
    """One criterion's share of a score: the event contract's ``Contribution`` in its JSON
    form (its fields in its order, floats as floats), so the same object is stored with the
    score and serialised into the event; a portfolio rescore builds hundreds of thousands."""

    criterion: str
    raw: float | None
    normalised: float
    weight: float
    contribution: float


@dataclass(frozen=True, slots=True)
class Scored:
    score: float
    explanation: tuple[Part, ...]


def _log_scale(x: float, saturation: float) -> float:
    return min(1.0, math.log10(1 + max(x, 0.0)) / math.log10(1 + saturation))


def _fit(fit: Mapping[str, float], objectives: Mapping[str, float]) -> float | None:
    if not fit:
        return None
    weights = {o: objectives.get(o, 1.0) for o in fit}
    total = sum(weights.values())
    if total == 0:
        return None
    return sum(fit[o] * w for o, w in weights.items()) / total


def _ratio(value: float | None, cost: float | None) -> float | None:
    if value is None or cost is None:
        return None
    return value / cost if cost > 0 else None


def raw_values(
    projects: Sequence[ScoringInputs],
    criterion: Criterion,
    objectives: Mapping[str, float],
    as_of: int,
) -> list[float | None]:
    """Each project's input for ``criterion`` in its own unit, or None if unknown. Computed a
    criterion at a time over the whole portfolio: one comprehension per criterion instead of a
    dispatch per project and criterion, which is what a rescore of 100,000 projects spends."""
    if criterion == "strategic_fit":
        return [_fit(p.strategic_fit, objectives) for p in projects]
    if criterion == "value":
        return [None if p.value is None else float(p.value) for p in projects]
    if criterion == "cost":
        return [None if p.cost is None else float(p.cost) for p in projects]
    if criterion == "value_for_money":
        return [_ratio(p.value, p.cost) for p in projects]
    if criterion == "risk":
        return [None if p.risk is None else float(p.risk) for p in projects]
    if criterion == "urgency":
        return [None if p.deadline is None else float(p.deadline - as_of) for p in projects]
    return [1.0 if p.mandatory else 0.0 for p in projects]


def raw_value(
    p: ScoringInputs, criterion: Criterion, objectives: Mapping[str, float], as_of: int
) -> float | None:
    """The project's input for ``criterion`` in its own unit, or None if unknown."""
    return raw_values([p], criterion, objectives, as_of)[0]


def absolute_values(
    criterion: Criterion, raws: Sequence[float | None], scales: Scales
) -> list[float]:
    """Normalisation on fixed scales (documented in docs/scoring.md), of a whole column."""
    missing = 0.0 if criterion == "value_for_money" else MISSING[criterion]
    if criterion == "strategic_fit":
        return [missing if r is None else min(1.0, r / 5.0) for r in raws]
    if criterion == "value":
        return [missing if r is None else _log_scale(r, scales.value) for r in raws]
    if criterion == "cost":
        return [missing if r is None else 1.0 - _log_scale(r, scales.cost) for r in raws]
    if criterion == "value_for_money":
        return [missing if r is None else _log_scale(r, scales.value_for_money) for r in raws]
    if criterion == "risk":
        return [missing if r is None else (5.0 - r) / 4.0 for r in raws]
    if criterion == "urgency":
        months = scales.urgency_months
        return [missing if r is None else min(1.0, max(0.0, 1.0 - r / months)) for r in raws]
    return [missing if r is None else r for r in raws]


def absolute(criterion: Criterion, raw: float | None, scales: Scales) -> float:
    """Normalisation on fixed scales (documented in docs/scoring.md)."""
    return absolute_values(criterion, [raw], scales)[0]


Bounds = dict[str, tuple[float, float]]


def portfolio_bounds(
    projects: Sequence[ScoringInputs],
    criteria: Sequence[Criterion],
    objectives: Mapping[str, float],
    as_of: int,
) -> Bounds:
    bounds: Bounds = {}
    ranked = [p for p in projects if p.ranked]
    for criterion in criteria:
        values = [v for v in raw_values(ranked, criterion, objectives, as_of) if v is not None]
        if values:
            bounds[criterion] = (min(values), max(values))
    return bounds


def relative_values(
    criterion: Criterion, raws: Sequence[float | None], bounds: Bounds
) -> list[float]:
    """Min-max normalisation over the portfolio, of a whole column; equal values all normalise
    to 0.5."""
    missing = MISSING[criterion]
    if criterion not in bounds:
        return [missing] * len(raws)
    low, high = bounds[criterion]
    if high == low:
        return [missing if r is None else 0.5 for r in raws]
    span = high - low
    if criterion in LOWER_IS_BETTER:
        return [missing if r is None else 1.0 - (r - low) / span for r in raws]
    return [missing if r is None else (r - low) / span for r in raws]


def relative(criterion: Criterion, raw: float | None, bounds: Bounds) -> float:
    """Min-max normalisation over the portfolio; equal values all normalise to 0.5."""
    return relative_values(criterion, [raw], bounds)[0]


def weighted_sums(
    projects: Sequence[ScoringInputs],
    weights: Mapping[Criterion, float],
    *,
    objectives: Mapping[str, float],
    scales: Scales,
    as_of: int,
    bounds: Bounds | None,
) -> list[Scored]:
    """The weighted score of each project, in order, a criterion at a time. Each project's sum
    adds its criteria's shares in the order of ``weights``, as a project-by-project sum would,
    so the scores are the same to the last bit."""
    totals = [0.0] * len(projects)
    columns: list[list[Part]] = []
    for criterion, weight in weights.items():
        raws = raw_values(projects, criterion, objectives, as_of)
        norms = (
            relative_values(criterion, raws, bounds)
            if bounds is not None
            else absolute_values(criterion, raws, scales)
        )
        shown_weight = round(weight, 6)
        shares = [100.0 * weight * n for n in norms]
        totals = [t + s for t, s in zip(totals, shares, strict=True)]
        columns.append(
            [
                {
                    "criterion": criterion,
                    "raw": None if r is None else round(r, 6),
                    "normalised": round(n, 6),
                    "weight": shown_weight,
                    "contribution": round(s, 6),
                }
                for r, n, s in zip(raws, norms, shares, strict=True)
            ]
        )
    explanations: list[tuple[Part, ...]] = (
        list(zip(*columns, strict=True)) if columns else [()] * len(projects)
    )
    return [
        Scored(round(total, 6), explanation)
        for total, explanation in zip(totals, explanations, strict=True)
    ]


def weighted_sum(
    p: ScoringInputs,
    weights: Mapping[Criterion, float],
    *,
    objectives: Mapping[str, float],
    scales: Scales,
    as_of: int,
    bounds: Bounds | None,
) -> Scored:
    return weighted_sums(
        [p], weights, objectives=objectives, scales=scales, as_of=as_of, bounds=bounds
    )[0]


def _part(
    criterion: str, raw: float | None, normalised: float, weight: float, contribution: float
) -> Part:
    """A ``Part`` whose numbers are floats whatever numbers came in, as the contract has them."""
    return {
        "criterion": criterion,
        "raw": None if raw is None else float(raw),
        "normalised": float(normalised),
        "weight": float(weight),
        "contribution": float(contribution),
    }


def wsjf(p: ScoringInputs, model: WsjfModel) -> Scored:
    if p.wsjf is None:
        return Scored(0.0, (_part("wsjf", None, 0.0, 1.0, 0.0),))
    job_size = p.wsjf.job_size or max(1.0, p.effort / model.job_size_unit)
    parts = {
        "business_value": p.wsjf.business_value,
        "time_criticality": p.wsjf.time_criticality,
        "risk_reduction": p.wsjf.risk_reduction,
    }
    explanation = [
        _part(name, value, round(value / job_size, 6), 1.0, round(value / job_size, 6))
        for name, value in parts.items()
    ]
    explanation.append(_part("job_size", round(job_size, 6), 1.0, 0.0, 0.0))
    return Scored(round(sum(parts.values()) / job_size, 6), tuple(explanation))


def ahp_weights(model: AhpModel) -> dict[Criterion, float]:
    result = priorities(model.matrix())
    return dict(zip(model.criteria, result.weights, strict=True))


def score_all(
    projects: Sequence[ScoringInputs],
    model: ScoringModel,
    *,
    as_of: int,
    only: set[str] | None = None,
) -> dict[str, Scored]:
    """Scores of ``projects`` (of one portfolio), or of those keyed in ``only``. With portfolio
    normalisation every project's score depends on all the others, so pass them all."""
    wanted = [p for p in projects if only is None or p.key in only]
    if isinstance(model, WsjfModel):
        return {p.key: wsjf(p, model) for p in wanted}
    weights = model.normalised_weights() if isinstance(model, WeightedModel) else ahp_weights(model)
    bounds = (
        portfolio_bounds(projects, list(weights), model.objectives, as_of)
        if model.normalisation == "portfolio"
        else None
    )
    scored = weighted_sums(
        wanted,
        weights,
        objectives=model.objectives,
        scales=model.scales,
        as_of=as_of,
        bounds=bounds,
    )
    return {p.key: s for p, s in zip(wanted, scored, strict=True)}


def depends_on_whole_portfolio(model: ScoringModel) -> bool:
    """True when one project's change can move other projects' scores."""
    return not isinstance(model, WsjfModel) and model.normalisation == "portfolio"


def depends_on_month(model: ScoringModel) -> bool:
    """True when scores move as time passes (urgency counts)."""
    if isinstance(model, WsjfModel):
        return False
    weights = (
        model.weights if isinstance(model, WeightedModel) else dict.fromkeys(model.criteria, 1)
    )
    return weights.get("urgency", 0) > 0
