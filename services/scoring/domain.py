"""Scoring rules: a project's score with its explanation, and the portfolio's ranking.

Pure: values in, values out. The weighted model scores each project from its own inputs only
(absolute normalisation), so a change to one project never changes another's score; it can only
move other projects' ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from shared.contracts.events import Contribution, ProjectState
from shared.contracts.inbound import Stage

RANKED_STAGES = frozenset({Stage.IDEA, Stage.PROPOSAL, Stage.APPROVED, Stage.ACTIVE, Stage.ON_HOLD})


@dataclass(frozen=True, slots=True)
class WeightedModel:
    """Criteria weights of the weighted-sum model; they are normalised to sum to one."""

    name: str = "weighted-default"
    version: int = 1
    strategic_fit: float = 0.4
    value_for_money: float = 0.4
    risk: float = 0.2

    def weights(self) -> dict[str, float]:
        raw = {
            "strategic_fit": self.strategic_fit,
            "value_for_money": self.value_for_money,
            "risk": self.risk,
        }
        total = sum(raw.values())
        return {k: v / total for k, v in raw.items()}


DEFAULT_MODEL = WeightedModel()


@dataclass(frozen=True, slots=True)
class Scored:
    score: float
    explanation: list[Contribution]


def _value_for_money(value: float | None, cost: float | None) -> tuple[float | None, float]:
    """Value/cost on a log scale: ratio 1 → 0.29, 3 → 0.58, 10 and above → 1."""
    if value is None or cost is None:
        return None, 0.0
    if cost == 0:
        return None, 1.0 if value > 0 else 0.0
    ratio = value / cost
    return ratio, min(1.0, math.log10(1 + ratio) / math.log10(11))


def score(project: ProjectState, model: WeightedModel = DEFAULT_MODEL) -> Scored:
    """Score in 0..100 with each criterion's raw input, normalised value, weight and share."""
    fit_values = list(project.strategic_fit.values())
    fit_raw = sum(fit_values) / len(fit_values) if fit_values else None
    ratio, vfm = _value_for_money(project.value, project.cost)
    risk_raw = float(project.risk) if project.risk is not None else None
    normalised = {
        "strategic_fit": (fit_raw, (fit_raw or 0.0) / 5.0),
        "value_for_money": (ratio, vfm),
        # Unknown risk counts as the middle of the scale.
        "risk": (risk_raw, (5.0 - (risk_raw if risk_raw is not None else 3.0)) / 4.0),
    }
    explanation = []
    total = 0.0
    for criterion, weight in model.weights().items():
        raw, norm = normalised[criterion]
        share = 100.0 * weight * norm
        total += share
        explanation.append(
            Contribution(
                criterion=criterion,
                raw=raw,
                normalised=round(norm, 6),
                weight=round(weight, 6),
                contribution=round(share, 6),
            )
        )
    return Scored(round(total, 6), explanation)


def is_ranked(project: ProjectState, withdrawn: bool) -> bool:
    return not withdrawn and project.stage in RANKED_STAGES


@dataclass(frozen=True, slots=True)
class RankEntry:
    key: str
    mandatory: bool
    score: float


def rank(entries: Iterable[RankEntry]) -> dict[str, int]:
    """Ranks 1..n: mandatory projects first, then by score; ties broken by key, so the ranking
    is the same whatever order the entries arrive in."""
    ordered = sorted(entries, key=lambda e: (not e.mandatory, -e.score, e.key))
    return {entry.key: position for position, entry in enumerate(ordered, start=1)}
