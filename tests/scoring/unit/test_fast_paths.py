"""The column-at-a-time scoring and the event JSON built without a model per project give
exactly what the project-at-a-time rules and the contract's own serialisation give."""

from __future__ import annotations

import math
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.domain.inputs import ScoringInputs
from services.scoring.domain.scoring import (
    LOWER_IS_BETTER,
    MISSING,
    Part,
    portfolio_bounds,
    score_all,
)
from services.scoring.handlers import scored_json
from shared.contracts.events import Contribution, ProjectScored
from shared.contracts.scoring import CRITERIA, OverrideInfo, Scales, WeightedModel

AS_OF = 2027 * 12


def _reference(
    p: ScoringInputs,
    model: WeightedModel,
    bounds: Mapping[str, tuple[float, float]] | None,
) -> tuple[float, list[tuple[str, float | None, float, float, float]]]:
    """The rules as written one project and one criterion at a time (docs/scoring.md)."""
    scales: Scales = model.scales
    total = 0.0
    parts = []
    for criterion, weight in model.normalised_weights().items():
        raw: float | None
        if criterion == "strategic_fit":
            weights = {o: model.objectives.get(o, 1.0) for o in p.strategic_fit}
            wsum = sum(weights.values())
            raw = (
                sum(p.strategic_fit[o] * w for o, w in weights.items()) / wsum
                if p.strategic_fit and wsum
                else None
            )
        elif criterion == "value":
            raw = p.value
        elif criterion == "cost":
            raw = p.cost
        elif criterion == "value_for_money":
            raw = p.value / p.cost if p.value is not None and p.cost else None
        elif criterion == "risk":
            raw = None if p.risk is None else float(p.risk)
        elif criterion == "urgency":
            raw = None if p.deadline is None else float(p.deadline - AS_OF)
        else:
            raw = 1.0 if p.mandatory else 0.0

        def log(x: float, saturation: float) -> float:
            return min(1.0, math.log10(1 + max(x, 0.0)) / math.log10(1 + saturation))

        if bounds is not None:
            if raw is None or criterion not in bounds:
                norm = MISSING[criterion]
            elif bounds[criterion][0] == bounds[criterion][1]:
                norm = 0.5
            else:
                low, high = bounds[criterion]
                x = (raw - low) / (high - low)
                norm = 1.0 - x if criterion in LOWER_IS_BETTER else x
        elif raw is None:
            norm = MISSING[criterion]
        elif criterion == "strategic_fit":
            norm = min(1.0, raw / 5.0)
        elif criterion == "value":
            norm = log(raw, scales.value)
        elif criterion == "cost":
            norm = 1.0 - log(raw, scales.cost)
        elif criterion == "value_for_money":
            norm = log(raw, scales.value_for_money)
        elif criterion == "risk":
            norm = (5.0 - raw) / 4.0
        elif criterion == "urgency":
            norm = min(1.0, max(0.0, 1.0 - raw / scales.urgency_months))
        else:
            norm = raw
        share = 100.0 * weight * norm
        total += share
        parts.append(
            (
                criterion,
                None if raw is None else round(raw, 6),
                round(norm, 6),
                round(weight, 6),
                round(share, 6),
            )
        )
    return round(total, 6), parts


money = st.none() | st.floats(0, 1e9, allow_nan=False)
projects = st.lists(
    st.builds(
        ScoringInputs,
        key=st.text("abc", min_size=1, max_size=6),
        mandatory=st.booleans(),
        ranked=st.booleans(),
        strategic_fit=st.dictionaries(st.sampled_from(["growth", "cost"]), st.integers(0, 5)),
        value=money,
        cost=money,
        risk=st.none() | st.integers(1, 5),
        deadline=st.none() | st.integers(AS_OF - 24, AS_OF + 48),
        wsjf=st.none(),
        effort=st.floats(0, 100),
    ),
    max_size=30,
    unique_by=lambda p: p.key,
)
models = st.builds(
    WeightedModel,
    method=st.just("weighted"),
    weights=st.dictionaries(st.sampled_from(CRITERIA), st.integers(1, 9), min_size=1),
    objectives=st.dictionaries(st.sampled_from(["growth", "cost"]), st.integers(0, 3)),
    normalisation=st.sampled_from(["absolute", "portfolio"]),
)


@settings(max_examples=300, deadline=None)
@given(projects, models)
def test_column_scoring_equals_project_at_a_time(
    portfolio: list[ScoringInputs], model: WeightedModel
) -> None:
    bounds = (
        portfolio_bounds(portfolio, list(model.normalised_weights()), model.objectives, AS_OF)
        if model.normalisation == "portfolio"
        else None
    )
    scores = score_all(portfolio, model, as_of=AS_OF)
    for p in portfolio:
        score, parts = _reference(p, model, bounds)
        got = scores[p.key]
        assert got.score == score
        assert [tuple(c.values()) for c in got.explanation] == parts
        assert all(isinstance(c["raw"], float) for c in got.explanation if c["raw"] is not None), (
            "explanations carry floats, as the contract does"
        )


contributions = st.lists(
    st.tuples(
        st.sampled_from(CRITERIA),
        st.none() | st.floats(-1e12, 1e12),
        st.floats(0, 1),
        st.floats(0, 1),
        st.floats(-1e-9, 1e3),
    ).map(lambda t: dict(zip(Part.__annotations__, t, strict=True))),
    max_size=7,
)
overrides = st.none() | st.builds(
    OverrideInfo,
    kind=st.sampled_from(["pin", "adjust"]),
    justification=st.text(min_size=10, max_size=30),
    author=st.text(min_size=1, max_size=10),
    rank=st.none() | st.integers(1, 1000),
    delta=st.none() | st.floats(-1000, 1000),
)


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(min_size=1, max_size=20),
    revision=st.integers(1, 2**40),
    score=st.floats(-1e6, 1e9),
    rank=st.none() | st.integers(1, 10**6),
    mandatory=st.booleans(),
    explanation=contributions,
    cause=st.sampled_from(["project_revision", "model_change", "override", "rescore"]),
    override=overrides,
)
def test_event_json_is_the_contracts_serialisation(
    key: str,
    revision: int,
    score: float,
    rank: int | None,
    mandatory: bool,
    explanation: list[Part],
    cause: str,
    override: OverrideInfo | None,
) -> None:
    fields = {
        "project_key": key,
        "portfolio": 'pörtfolio "q"',
        "project_revision": revision,
        "ranking_version": 7,
        "model": "growth-first",
        "model_version": 3,
        "score": score,
        "rank": rank,
        "mandatory": mandatory,
        "cause": cause,
        "override": override,
    }
    expected = ProjectScored.model_validate(
        {**fields, "explanation": [Contribution.model_validate(c) for c in explanation]}
    ).model_dump_json()
    assert scored_json(**fields, explanation=explanation) == expected.encode()  # type: ignore[arg-type]
