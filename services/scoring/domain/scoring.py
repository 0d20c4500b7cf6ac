"""Scores with their explanations, for each method. Pure: ``as_of`` (the month urgency is
measured from) comes in as an argument."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from services.scoring.domain.ahp import priorities
from services.scoring.domain.inputs import ScoringInputs
from shared.contracts.events import Contribution
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


class Part(NamedTuple):
    """One criterion's share of a score (the event contract's ``Contribution``, kept light:
    a portfolio rescore builds hundreds of thousands of these)."""

    criterion: str
    raw: float | None
    normalised: float
    weight: float
    contribution: float

    def contract(self) -> Contribution:
        return Contribution.model_construct(**self._asdict())


@dataclass(frozen=True, slots=True)
class Scored:
    score: float
    explanation: tuple[Part, ...]


def _log_scale(x: float, saturation: float) -> float:
    return min(1.0, math.log10(1 + max(x, 0.0)) / math.log10(1 + saturation))


def raw_value(
    p: ScoringInputs, criterion: Criterion, objectives: Mapping[str, float], as_of: int
) -> float | None:
    """The project's input for ``criterion`` in its own unit, or None if unknown."""
    if criterion == "strategic_fit":
        if not p.strategic_fit:
            return None
        weights = {o: objectives.get(o, 1.0) for o in p.strategic_fit}
        total = sum(weights.values())
        if total == 0:
            return None
        return sum(p.strategic_fit[o] * w for o, w in weights.items()) / total
    if criterion == "value":
        return p.value
    if criterion == "cost":
        return p.cost
    if criterion == "value_for_money":
        if p.value is None or p.cost is None:
            return None
        return p.value / p.cost if p.cost > 0 else None
    if criterion == "risk":
        return float(p.risk) if p.risk is not None else None
    if criterion == "urgency":
        return float(p.deadline - as_of) if p.deadline is not None else None
    return 1.0 if p.mandatory else 0.0


def absolute(criterion: Criterion, raw: float | None, scales: Scales) -> float:
    """Normalisation on fixed scales (documented in docs/scoring.md)."""
    if raw is None:
        if criterion == "value_for_money":
            return 0.0
        return MISSING[criterion]
    if criterion == "strategic_fit":
        return min(1.0, raw / 5.0)
    if criterion == "value":
        return _log_scale(raw, scales.value)
    if criterion == "cost":
        return 1.0 - _log_scale(raw, scales.cost)
    if criterion == "value_for_money":
        return _log_scale(raw, scales.value_for_money)
    if criterion == "risk":
        return (5.0 - raw) / 4.0
    if criterion == "urgency":
        return min(1.0, max(0.0, 1.0 - raw / scales.urgency_months))
    return raw


Bounds = dict[str, tuple[float, float]]


def portfolio_bounds(
    projects: Sequence[ScoringInputs],
    criteria: Sequence[Criterion],
    objectives: Mapping[str, float],
    as_of: int,
) -> Bounds:
    bounds: Bounds = {}
    for criterion in criteria:
        values = [
            v
            for p in projects
            if p.ranked and (v := raw_value(p, criterion, objectives, as_of)) is not None
        ]
        if values:
            bounds[criterion] = (min(values), max(values))
    return bounds


def relative(criterion: Criterion, raw: float | None, bounds: Bounds) -> float:
    """Min-max normalisation over the portfolio; equal values all normalise to 0.5."""
    if raw is None or criterion not in bounds:
        return MISSING[criterion]
    low, high = bounds[criterion]
    if high == low:
        return 0.5
    x = (raw - low) / (high - low)
    return 1.0 - x if criterion in LOWER_IS_BETTER else x


def weighted_sum(
    p: ScoringInputs,
    weights: Mapping[Criterion, float],
    *,
    objectives: Mapping[str, float],
    scales: Scales,
    as_of: int,
    bounds: Bounds | None,
) -> Scored:
    explanation = []
    total = 0.0
    for criterion, weight in weights.items():
        raw = raw_value(p, criterion, objectives, as_of)
        norm = (
            relative(criterion, raw, bounds)
            if bounds is not None
            else absolute(criterion, raw, scales)
        )
        share = 100.0 * weight * norm
        total += share
        explanation.append(
            Part(
                criterion,
                None if raw is None else round(raw, 6),
                round(norm, 6),
                round(weight, 6),
                round(share, 6),
            )
        )
    return Scored(round(total, 6), tuple(explanation))


def wsjf(p: ScoringInputs, model: WsjfModel) -> Scored:
    if p.wsjf is None:
        return Scored(0.0, (Part("wsjf", None, 0.0, 1.0, 0.0),))
    job_size = p.wsjf.job_size or max(1.0, p.effort / model.job_size_unit)
    parts = {
        "business_value": p.wsjf.business_value,
        "time_criticality": p.wsjf.time_criticality,
        "risk_reduction": p.wsjf.risk_reduction,
    }
    explanation = [
        Part(name, value, round(value / job_size, 6), 1.0, round(value / job_size, 6))
        for name, value in parts.items()
    ]
    explanation.append(Part("job_size", round(job_size, 6), 1.0, 0.0, 0.0))
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
    return {
        p.key: weighted_sum(
            p, weights, objectives=model.objectives, scales=model.scales, as_of=as_of, bounds=bounds
        )
        for p in wanted
    }


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
