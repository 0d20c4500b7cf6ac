"""Scoring rules against worked examples and properties."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.domain.ahp import priorities
from services.scoring.domain.commands import check_model
from services.scoring.domain.inputs import ScoringInputs, Wsjf
from services.scoring.domain.ranking import Override, RankEntry, adjusted, rank
from services.scoring.domain.scoring import score_all
from shared.contracts.common import month_index
from shared.contracts.events import ProjectState
from shared.contracts.scoring import (
    DEFAULT_MODEL,
    AhpModel,
    ModelEnvelope,
    WeightedModel,
    WsjfModel,
)

AS_OF = month_index("2027-01")


def inputs(key: str = "retail/jira/P-1", **fields: object) -> ScoringInputs:
    base: dict[str, object] = {
        "name": "P",
        "portfolio": "retail",
        "source": "jira",
        "external_id": key.rsplit("/", 1)[-1],
        "value": 1_000_000,
        "cost": 250_000,
        "strategic_fit": {"growth": 4, "efficiency": 2},
        "risk": 2,
    }
    base.update(fields)
    return ScoringInputs.of(key, ProjectState.model_validate(base), withdrawn=False)


def one(p: ScoringInputs, model: object = DEFAULT_MODEL) -> float:
    return score_all([p], model, as_of=AS_OF)[p.key].score  # type: ignore[arg-type]


def test_hand_checked_default_weighted_score() -> None:
    # fit: mean(4, 2) = 3 → 0.6; value/cost = 4 → log10(5)/log10(11) = 0.67118;
    # risk 2 → (5-2)/4 = 0.75. Score = 100 (0.4·0.6 + 0.4·0.67118 + 0.2·0.75) = 65.847
    p = inputs()
    result = score_all([p], DEFAULT_MODEL, as_of=AS_OF)[p.key]
    expected = 100 * (0.4 * 0.6 + 0.4 * math.log10(5) / math.log10(11) + 0.2 * 0.75)
    assert math.isclose(result.score, expected, abs_tol=1e-5)
    by_name = {c["criterion"]: c for c in result.explanation}
    assert by_name["strategic_fit"]["raw"] == 3
    assert by_name["value_for_money"]["raw"] == 4
    assert by_name["risk"]["normalised"] == 0.75
    assert math.isclose(
        sum(c["contribution"] for c in result.explanation), result.score, abs_tol=1e-4
    )


def test_objective_weights_weigh_strategic_fit() -> None:
    model = WeightedModel(weights={"strategic_fit": 1}, objectives={"growth": 3, "efficiency": 1})
    # (4·3 + 2·1) / 4 = 3.5 → 0.7 → 70
    assert one(inputs(), model) == pytest.approx(70.0)


def test_urgency_grows_as_the_deadline_nears() -> None:
    model = WeightedModel(weights={"urgency": 1})
    assert one(inputs(deadline="2027-04"), model) == pytest.approx(100 * (1 - 3 / 24))
    assert one(inputs(deadline="2026-06"), model) == pytest.approx(100.0)  # overdue
    assert one(inputs(deadline="2030-01"), model) == pytest.approx(0.0)
    assert one(inputs(), model) == pytest.approx(0.0)  # no deadline, no urgency


def test_weights_are_normalised() -> None:
    weights = WeightedModel(weights={"strategic_fit": 2, "value_for_money": 2, "risk": 1})
    assert math.isclose(sum(weights.normalised_weights().values()), 1.0)
    assert weights.normalised_weights() == DEFAULT_MODEL.normalised_weights()


@given(
    st.floats(min_value=0, max_value=1e12),
    st.floats(min_value=0, max_value=1e12),
    st.floats(min_value=1, max_value=1e12),
)
def test_raising_value_never_lowers_the_score(low: float, extra: float, cost: float) -> None:
    model = WeightedModel(weights={"value": 1, "value_for_money": 1, "strategic_fit": 1})
    assert one(inputs(value=low + extra, cost=cost), model) >= one(
        inputs(value=low, cost=cost), model
    )


def test_portfolio_normalisation_moves_other_scores_when_one_project_changes() -> None:
    model = WeightedModel(weights={"value": 1}, normalisation="portfolio")
    a, b, c = inputs("r/j/A", value=100), inputs("r/j/B", value=200), inputs("r/j/C", value=300)
    before = score_all([a, b, c], model, as_of=AS_OF)
    assert [before[k].score for k in ("r/j/A", "r/j/B", "r/j/C")] == [0.0, 50.0, 100.0]
    after = score_all([a, b, inputs("r/j/C", value=500)], model, as_of=AS_OF)
    assert after["r/j/B"].score == pytest.approx(25.0)  # B did not change, its score did


def test_wsjf_worked_examples() -> None:
    model = WsjfModel()
    # SAFe: cost of delay (8 + 5 + 3) / job size 5 = 3.2
    assert (
        one(
            inputs(
                wsjf={
                    "business_value": 8,
                    "time_criticality": 5,
                    "risk_reduction": 3,
                    "job_size": 5,
                }
            ),
            model,
        )
        == 3.2
    )
    # (20 + 8 + 13) / 8 = 5.125
    assert (
        one(
            inputs(
                wsjf={
                    "business_value": 20,
                    "time_criticality": 8,
                    "risk_reduction": 13,
                    "job_size": 8,
                }
            ),
            model,
        )
        == 5.125
    )


def test_wsjf_job_size_from_demand_when_not_given() -> None:
    p = ScoringInputs("r/j/X", False, True, {}, None, None, None, None, Wsjf(10, 5, 3, None), 12.0)
    result = score_all([p], WsjfModel(job_size_unit=6), as_of=AS_OF)[p.key]
    assert result.score == 9.0  # 18 / (12 person-months / 6)
    assert {c["criterion"]: c["raw"] for c in result.explanation}["job_size"] == 2.0


TEXTBOOK = [[1, 3, 5], [1 / 3, 1, 3], [1 / 5, 1 / 3, 1]]


def test_ahp_textbook_matrix() -> None:
    # The classic three-criteria example: w ≈ (0.637, 0.258, 0.105), λmax ≈ 3.039,
    # CI ≈ 0.019, CR ≈ 0.033 (RI = 0.58).
    result = priorities(TEXTBOOK)
    assert [round(w, 3) for w in result.weights] == [0.637, 0.258, 0.105]
    assert result.lambda_max == pytest.approx(3.0385, abs=5e-4)
    assert result.ci == pytest.approx(0.0193, abs=5e-4)
    assert result.cr == pytest.approx(0.0332, abs=5e-4)
    assert result.consistent


def test_ahp_recovers_the_weights_of_a_perfectly_consistent_matrix() -> None:
    w = [0.5, 0.25, 0.15, 0.1]
    result = priorities([[a / b for b in w] for a in w])
    assert result.weights == pytest.approx(w)
    assert result.cr == pytest.approx(0.0, abs=1e-9)


def _ahp(comparisons: dict[str, dict[str, float]]) -> ModelEnvelope:
    return ModelEnvelope.model_validate(
        {
            "name": "ahp",
            "model": {
                "method": "ahp",
                "criteria": ["strategic_fit", "value_for_money", "risk"],
                "comparisons": comparisons,
            },
        }
    )


def test_an_inconsistent_ahp_model_is_refused_naming_the_worst_comparison() -> None:
    model = _ahp(
        {
            "strategic_fit": {"value_for_money": 9, "risk": 1 / 9},
            "value_for_money": {"risk": 9},
        }
    )
    (reason,) = check_model(model)
    assert reason.code == "ahp_inconsistent"
    assert "consistency ratio" in reason.message
    assert "most inconsistent comparison is" in reason.message


def test_a_consistent_ahp_model_scores_with_its_derived_weights() -> None:
    envelope = _ahp(
        {"strategic_fit": {"value_for_money": 3, "risk": 5}, "value_for_money": {"risk": 3}}
    )
    assert check_model(envelope) == []
    assert isinstance(envelope.model, AhpModel)
    result = score_all([inputs()], envelope.model, as_of=AS_OF)["retail/jira/P-1"]
    weights = {c["criterion"]: round(c["weight"], 3) for c in result.explanation}
    assert weights == {"strategic_fit": 0.637, "value_for_money": 0.258, "risk": 0.105}


def test_ahp_needs_every_pair_judged_once() -> None:
    with pytest.raises(ValueError, match="need 3 judgements"):
        _ahp({"strategic_fit": {"value_for_money": 3}})
    with pytest.raises(ValueError, match="judged twice"):
        _ahp(
            {
                "strategic_fit": {"value_for_money": 3, "risk": 5},
                "value_for_money": {"strategic_fit": 2, "risk": 3},
            }
        )


def test_mandatory_projects_rank_first_and_ties_break_by_key() -> None:
    ranks = rank(
        [
            RankEntry("r/j/B", False, 90),
            RankEntry("r/j/A", False, 90),
            RankEntry("r/j/M", True, 10),
            RankEntry("r/j/C", False, 95),
        ]
    )
    assert ranks == {"r/j/M": 1, "r/j/C": 2, "r/j/A": 3, "r/j/B": 4}


def test_pins_hold_their_rank_but_never_above_mandatory_projects() -> None:
    entries = [
        RankEntry("r/j/M", True, 1),
        RankEntry("r/j/A", False, 90),
        RankEntry("r/j/B", False, 80),
        RankEntry("r/j/C", False, 10),
    ]
    pin = Override("pin", "board decision 2026-11", "cfo", rank=1)
    assert rank(entries, {"r/j/C": pin}) == {"r/j/M": 1, "r/j/C": 2, "r/j/A": 3, "r/j/B": 4}
    far = Override("pin", "parked until Q3 review", "pmo", rank=99)
    assert rank(entries, {"r/j/A": far})["r/j/A"] == 4


def test_adjustments_change_the_score_used_for_ranking() -> None:
    bump = Override("adjust", "strategic bet", "cto", delta=15)
    assert adjusted(80, bump) == 95
    assert adjusted(80, None) == 80


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=5), st.booleans(), st.floats(0, 100)),
        unique_by=lambda t: t[0],
    ),
    st.randoms(),
)
def test_ranking_does_not_depend_on_arrival_order(
    rows: list[tuple[str, bool, float]], rnd: random.Random
) -> None:
    entries = [RankEntry(*row) for row in rows]
    pins = {entries[0].key: Override("pin", "x" * 10, "a", rank=2)} if entries else {}
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert rank(entries, pins) == rank(shuffled, pins)
    assert sorted(rank(entries, pins).values()) == list(range(1, len(entries) + 1))
