from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from services.scoring.domain import RankEntry, WeightedModel, rank, score
from shared.contracts.events import ProjectState


def project(**fields: object) -> ProjectState:
    base: dict[str, object] = {
        "name": "P",
        "portfolio": "retail",
        "source": "jira",
        "external_id": "P-1",
        "value": 1_000_000,
        "cost": 250_000,
        "strategic_fit": {"growth": 4, "efficiency": 2},
        "risk": 2,
    }
    base.update(fields)
    return ProjectState.model_validate(base)


def test_hand_checked_weighted_score() -> None:
    # fit: mean(4, 2) = 3 → 0.6; value/cost = 4 → log10(5)/log10(11) = 0.67118;
    # risk 2 → (5-2)/4 = 0.75. Score = 100 * (0.4*0.6 + 0.4*0.67118 + 0.2*0.75) = 65.847
    result = score(project())
    expected = 100 * (0.4 * 0.6 + 0.4 * math.log10(5) / math.log10(11) + 0.2 * 0.75)
    assert math.isclose(result.score, expected, abs_tol=1e-5)
    by_name = {c.criterion: c for c in result.explanation}
    assert by_name["strategic_fit"].raw == 3
    assert by_name["value_for_money"].raw == 4
    assert by_name["risk"].normalised == 0.75


def test_contributions_add_up_to_the_score() -> None:
    result = score(project())
    assert math.isclose(sum(c.contribution for c in result.explanation), result.score, abs_tol=1e-4)


def test_weights_are_normalised() -> None:
    weights = WeightedModel(strategic_fit=2, value_for_money=2, risk=1).weights()
    assert math.isclose(sum(weights.values()), 1.0)
    assert weights == WeightedModel().weights()


@given(
    st.floats(min_value=0, max_value=1e9),
    st.floats(min_value=0, max_value=1e9),
    st.floats(min_value=1, max_value=1e9),
)
def test_raising_value_never_lowers_the_score(low: float, extra: float, cost: float) -> None:
    assert (
        score(project(value=low + extra, cost=cost)).score
        >= score(project(value=low, cost=cost)).score
    )


def test_mandatory_projects_rank_first_and_ties_break_by_key() -> None:
    ranks = rank(
        [
            RankEntry("retail/jira/B", False, 90),
            RankEntry("retail/jira/A", False, 90),
            RankEntry("retail/jira/M", True, 10),
            RankEntry("retail/jira/C", False, 95),
        ]
    )
    assert ranks == {
        "retail/jira/M": 1,
        "retail/jira/C": 2,
        "retail/jira/A": 3,
        "retail/jira/B": 4,
    }


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=5), st.booleans(), st.floats(0, 100)),
        unique_by=lambda t: t[0],
    ),
    st.randoms(),
)
def test_ranking_does_not_depend_on_arrival_order(
    rows: list[tuple[str, bool, float]], rnd: object
) -> None:
    entries = [RankEntry(*row) for row in rows]
    shuffled = list(entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert rank(entries) == rank(shuffled)
