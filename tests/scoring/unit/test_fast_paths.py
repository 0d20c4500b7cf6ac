"""The column-at-a-time scoring (numpy), the vectorised ranking and the event JSON built without
a model per project give exactly what the project-at-a-time rules, the entry-at-a-time ranking
and the contract's own serialisation give: floats to the last bit, JSON to the byte."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from services.scoring.domain.inputs import InputColumns, ScoringInputs, Wsjf
from services.scoring.domain.ranking import Override, RankEntry, rank, rank_rows
from services.scoring.domain.scoring import (
    LOWER_IS_BETTER,
    MISSING,
    Part,
    ahp_weights,
    float_texts,
    portfolio_bounds,
    round6,
    score_all,
)
from services.scoring.handlers import score_entries, scores_changed
from shared.contracts.events import Contribution, ProjectScore, ScoresChanged
from shared.contracts.scoring import (
    CRITERIA,
    AhpModel,
    OverrideInfo,
    Scales,
    WeightedModel,
    WsjfModel,
)

AS_OF = 2027 * 12
NOW = datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
EXPLANATION = TypeAdapter(list[Contribution])

Reference = tuple[float, list[tuple[str, float | None, float, float, float]]]


def _reference(
    p: ScoringInputs,
    model: WeightedModel | AhpModel,
    bounds: Mapping[str, tuple[float, float]] | None,
) -> Reference:
    """The rules as written one project and one criterion at a time (docs/scoring.md)."""
    scales: Scales = model.scales
    total = 0.0
    parts: list[tuple[str, float | None, float, float, float]] = []
    shares = model.normalised_weights() if isinstance(model, WeightedModel) else ahp_weights(model)
    for criterion, weight in shares.items():
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


def _wsjf_reference(p: ScoringInputs, model: WsjfModel) -> Reference:
    """WSJF as written one project at a time (docs/scoring.md)."""
    if p.wsjf is None:
        return 0.0, [("wsjf", None, 0.0, 1.0, 0.0)]
    job_size = p.wsjf.job_size or max(1.0, p.effort / model.job_size_unit)
    parts = {
        "business_value": p.wsjf.business_value,
        "time_criticality": p.wsjf.time_criticality,
        "risk_reduction": p.wsjf.risk_reduction,
    }
    explanation: list[tuple[str, float | None, float, float, float]] = [
        (name, float(value), round(value / job_size, 6), 1.0, round(value / job_size, 6))
        for name, value in parts.items()
    ]
    explanation.append(("job_size", round(job_size, 6), 1.0, 0.0, 0.0))
    return round(sum(parts.values()) / job_size, 6), explanation


def _check(scored: dict[str, Any], p: ScoringInputs, expected: Reference) -> None:
    score, parts = expected
    got = scored[p.key]
    # Infinite raw values (a value over a cost of 5e-324) can make NaN of both.
    assert got.score == score or (math.isnan(got.score) and math.isnan(score))
    # The contract writes a number that is not finite (a value over a cost of 5e-324) as null.
    shown = [
        tuple(x if not isinstance(x, float) or math.isfinite(x) else None for x in part)
        for part in parts
    ]
    assert [tuple(c.values()) for c in got.explanation] == shown
    assert all(isinstance(c["raw"], float) for c in got.explanation if c["raw"] is not None), (
        "explanations carry floats, as the contract does"
    )
    # The explanation's JSON is the contract's, byte for byte (signed zeros included).
    assert got.explanation_json == EXPLANATION.dump_json(
        [
            Contribution.model_validate(dict(zip(Part.__annotations__, c, strict=True)))
            for c in parts
        ]
    )


# Numbers with few decimals land on or next to the half-way points of rounding to 6 places.
decimals = st.integers(-(10**9), 10**9).map(lambda k: k / 10**7)
money = st.none() | st.floats(0, 1e9, allow_nan=False) | decimals.map(abs) | st.just(-0.0)
fit_score = st.integers(0, 5) | st.floats(0, 5) | st.sampled_from([0.1, 2.5, 3.3, -0.0])
objective = st.sampled_from(["growth", "cost", "customer", "efficiency", "compliance"])
projects = st.lists(
    st.builds(
        ScoringInputs,
        key=st.text("abcé", min_size=1, max_size=6),
        mandatory=st.booleans(),
        ranked=st.booleans(),
        strategic_fit=st.dictionaries(objective, fit_score),
        value=money,
        cost=money,
        risk=st.none() | st.integers(1, 5),
        deadline=st.none() | st.integers(AS_OF - 24, AS_OF + 48),
        wsjf=st.none()
        | st.builds(
            Wsjf,
            st.floats(0, 100) | decimals.map(abs),
            st.floats(0, 100),
            st.integers(0, 100),
            st.none() | st.floats(0, 100) | st.integers(0, 20),
        ),
        effort=st.floats(0, 100) | decimals.map(abs),
    ),
    max_size=30,
    unique_by=lambda p: p.key,
)
models = st.builds(
    WeightedModel,
    method=st.just("weighted"),
    weights=st.dictionaries(
        st.sampled_from(CRITERIA), st.integers(1, 9) | st.floats(0.01, 9), min_size=1
    ),
    objectives=st.dictionaries(objective, st.integers(0, 3) | st.floats(0, 3)),
    normalisation=st.sampled_from(["absolute", "portfolio"]),
    scales=st.builds(
        Scales,
        value=st.floats(1, 1e9),
        cost=st.floats(1, 1e9),
        value_for_money=st.floats(0.5, 100),
        urgency_months=st.integers(1, 120),
    ),
)


def _bounds(
    portfolio: list[ScoringInputs], model: WeightedModel | AhpModel
) -> dict[str, tuple[float, float]] | None:
    if model.normalisation != "portfolio":
        return None
    weights = model.normalised_weights() if isinstance(model, WeightedModel) else ahp_weights(model)
    return portfolio_bounds(InputColumns.of(portfolio), list(weights), model.objectives, AS_OF)


@settings(max_examples=500, deadline=None)
@given(projects, models)
def test_column_scoring_equals_project_at_a_time(
    portfolio: list[ScoringInputs], model: WeightedModel
) -> None:
    bounds = _bounds(portfolio, model)
    scores = score_all(portfolio, model, as_of=AS_OF)
    for p in portfolio:
        _check(scores, p, _reference(p, model, bounds))


@settings(max_examples=100, deadline=None)
@given(
    projects,
    st.sampled_from(["absolute", "portfolio"]),
    st.sampled_from([{"value_for_money": 3, "risk": 5}, {"value_for_money": 1 / 3, "risk": 2}]),
    st.sampled_from([{"risk": 3}, {"risk": 1 / 2}]),
)
def test_ahp_scoring_equals_project_at_a_time(
    portfolio: list[ScoringInputs],
    normalisation: str,
    fit: dict[str, float],
    vfm: dict[str, float],
) -> None:
    model = AhpModel.model_validate(
        {
            "method": "ahp",
            "criteria": ["strategic_fit", "value_for_money", "risk"],
            "comparisons": {"strategic_fit": fit, "value_for_money": vfm},
            "normalisation": normalisation,
        }
    )
    bounds = _bounds(portfolio, model)
    scores = score_all(portfolio, model, as_of=AS_OF)
    for p in portfolio:
        _check(scores, p, _reference(p, model, bounds))


@settings(max_examples=300, deadline=None)
@given(projects, st.floats(0.5, 24) | st.integers(1, 12))
def test_column_wsjf_equals_project_at_a_time(portfolio: list[ScoringInputs], unit: float) -> None:
    model = WsjfModel(job_size_unit=unit)
    scores = score_all(portfolio, model, as_of=AS_OF)
    for p in portfolio:
        _check(scores, p, _wsjf_reference(p, model))


near_ties = st.integers(-(10**12), 10**12).flatmap(
    lambda k: st.sampled_from([k / 1e6, (k + 0.5) / 1e6, (2 * k + 1) / 2e6, k / 1e7, k / 3])
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.floats() | near_ties | st.floats(-1e-300, 1e-300), min_size=1, max_size=20))
def test_round6_is_pythons_round(values: list[float]) -> None:
    got = round6(np.array(values)).tolist()
    expected = [round(v, 6) for v in values]
    assert [(math.copysign(1, g), g) for g in got if not math.isnan(g)] == [
        (math.copysign(1, e), e) for e in expected if not math.isnan(e)
    ]
    assert [math.isnan(g) for g in got] == [math.isnan(e) for e in expected]


@given(st.lists(st.floats() | near_ties, max_size=20))
def test_float_texts_are_the_contracts(values: list[float]) -> None:
    expected = [
        Contribution(criterion="x", raw=None, normalised=v, weight=0, contribution=0)
        .model_dump_json()
        .split('"normalised":')[1]
        .split(",")[0]
        .encode()
        for v in values
    ]
    assert float_texts(np.array(values, dtype=np.float64)) == expected


def _rank_reference(entries: list[RankEntry], overrides: Mapping[str, Override]) -> dict[str, int]:
    """The ranking as written one entry at a time (docs/scoring.md)."""
    pins = {
        e.key: overrides[e.key].rank
        for e in entries
        if e.key in overrides and overrides[e.key].kind == "pin" and overrides[e.key].rank
    }
    order = sorted(
        (e for e in entries if e.key not in pins), key=lambda e: (not e.mandatory, -e.score, e.key)
    )
    floor = sum(1 for e in entries if e.mandatory) + 1
    for key, wanted in sorted(pins.items(), key=lambda kv: (kv[1] or 0, kv[0])):
        position = min(max(wanted or 1, floor), len(order) + 1) - 1
        order.insert(position, next(e for e in entries if e.key == key))
    return {entry.key: position for position, entry in enumerate(order, start=1)}


entries = st.lists(
    st.builds(
        RankEntry,
        key=st.text("abé", min_size=1, max_size=4),
        mandatory=st.booleans(),
        score=st.sampled_from([0.0, -0.0, 1.5, 50.0, 99.999999]) | st.floats(-100, 100),
    ),
    max_size=40,
    unique_by=lambda e: e.key,
)
override_sets = st.dictionaries(
    st.text("abé", min_size=1, max_size=4),
    st.builds(
        Override,
        kind=st.sampled_from(["pin", "adjust"]),
        justification=st.just("x" * 10),
        author=st.just("a"),
        rank=st.none() | st.integers(1, 45),
        delta=st.none() | st.floats(-10, 10),
    ),
    max_size=8,
)


@settings(max_examples=500, deadline=None)
@given(entries, override_sets, st.randoms())
def test_vectorised_ranking_equals_entry_at_a_time(
    ranked: list[RankEntry], overrides: dict[str, Override], rnd: Any
) -> None:
    shuffled = list(ranked)
    rnd.shuffle(shuffled)
    assert rank(shuffled, overrides) == _rank_reference(ranked, overrides)
    # Rows that are not ranked take no place and get no rank.
    rows = sorted([*ranked, RankEntry("zz-closed", True, 100.0)], key=lambda e: e.key)
    got = rank_rows(
        [e.key for e in rows],
        np.array([e.mandatory for e in rows]),
        np.array([e.score for e in rows]),
        np.array([e.key != "zz-closed" for e in rows]),
        overrides,
    )
    expected = _rank_reference(ranked, overrides)
    assert dict(zip([e.key for e in rows], got.tolist(), strict=True)) == {
        **expected,
        "zz-closed": 0,
    }


contributions = st.lists(
    st.tuples(
        st.sampled_from(CRITERIA),
        st.none() | st.floats(-1e12, 1e12) | st.floats(allow_nan=False),
        st.floats(0, 1),
        st.floats(0, 1),
        st.floats(-1e-9, 1e3) | near_ties,
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
    score=st.floats(-1e6, 1e9) | near_ties | st.just(-0.0),
    rank=st.none() | st.integers(1, 10**6),
    mandatory=st.booleans(),
    explanation=contributions,
    cause=st.sampled_from(
        ["project_revision", "model_change", "override", "rescore", "portfolio_change"]
    ),
    override=overrides,
    names=st.tuples(st.text(max_size=8), st.text(max_size=8)),
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
    names: tuple[str, str],
) -> None:
    portfolio = f'pörtfolio "q" %s {names[0]}'
    model = f"growth-first %d {names[1]}"
    contract = [Contribution.model_validate(c) for c in explanation]
    entries = score_entries(
        keys=[key, key + "2"],
        revisions=[revision, 1],
        scores=[score, 0.5],
        ranks=[rank, None],
        mandatory=[mandatory, False],
        explanations=[EXPLANATION.dump_json(contract), b"[]"],
        causes=[cause, "portfolio_change"],
        overrides=[None if override is None else override.model_dump_json().encode(), None],
    )
    (message,) = scores_changed(
        "scores",
        portfolio=portfolio,
        ranking_version=7,
        model=model,
        model_version=3,
        entries=entries,
        now=NOW,
    )
    expected = ScoresChanged(
        portfolio=portfolio,
        ranking_version=7,
        model=model,
        model_version=3,
        scores=[
            ProjectScore.model_validate(
                {
                    "project_key": key,
                    "project_revision": revision,
                    "score": score,
                    "rank": rank,
                    "mandatory": mandatory,
                    "explanation": contract,
                    "cause": cause,
                    "override": override,
                }
            ),
            ProjectScore(
                project_key=key + "2",
                project_revision=1,
                score=0.5,
                rank=None,
                mandatory=False,
                explanation=[],
                cause="portfolio_change",
            ),
        ],
    )
    assert message.value == expected.model_dump_json().encode()
    assert message.key == portfolio.encode()
    assert message.headers["ce_type"] == ScoresChanged.TYPE


def _entry(i: int, size: int) -> bytes:
    return score_entries(
        keys=[f"p/s/{i:06d}" + "x" * size],
        revisions=[1],
        scores=[float(i)],
        ranks=[i],
        mandatory=[False],
        explanations=[b"[]"],
        causes=["rescore"],
        overrides=[None],
    )[0]


def test_scores_are_split_by_count_and_by_size_and_arrive_in_order() -> None:
    def split(entries: list[bytes]) -> list[ScoresChanged]:
        messages = scores_changed(
            "scores",
            portfolio="p",
            ranking_version=4,
            model="m",
            model_version=1,
            entries=entries,
            now=NOW,
        )
        assert len({m.headers["ce_id"] for m in messages}) == len(messages)
        return [ScoresChanged.model_validate_json(m.value) for m in messages]

    by_count = split([_entry(i, 0) for i in range(ScoresChanged.MAX_SCORES * 2 + 1)])
    assert [len(e.scores) for e in by_count] == [ScoresChanged.MAX_SCORES] * 2 + [1]
    by_size = split([_entry(i, 20_000) for i in range(40)])
    assert len(by_size) > 1
    assert all(len(e.model_dump_json()) <= ScoresChanged.MAX_BYTES for e in by_size), (
        "each record stays within its budget"
    )
    assert [s.rank for e in by_size for s in e.scores] == list(range(40))
    # One entry larger than the budget still goes, alone.
    alone = split([_entry(0, 10), _entry(1, ScoresChanged.MAX_BYTES), _entry(2, 10)])
    assert [len(e.scores) for e in alone] == [1, 1, 1]
    assert split([]) == []
