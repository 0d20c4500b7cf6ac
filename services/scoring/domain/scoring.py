"""Scores with their explanations, for each method. Pure: ``as_of`` (the month urgency is
measured from) comes in as an argument.

A portfolio is scored a criterion at a time, on numpy columns (``InputColumns``), and each
project's explanation comes out as the JSON of the event contract's ``list[Contribution]``:
that is what is put into the event (explanations are not stored; they are made again when
published without a rescore), and a rescore makes 100,000 of them. Every number is still the
one the rules give when applied to one project at a time in Python floats
(tests/scoring/unit/test_fast_paths.py holds that reference), to the last bit:

- numpy's ``+ - * /`` are the same IEEE operations as Python's, applied in the same order;
- ``min``/``max`` are written as the comparisons Python's builtins make (``np.where``), so
  signed zeros come out as they do there;
- logarithms are ``math.log10`` (numpy's own may differ in the last place on some CPUs);
- rounding is Python's ``round(x, 6)`` (``round6``);
- numbers are written by pydantic's serialiser, as the contract writes them."""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypedDict, TypeVar, cast

import numpy as np
import numpy.typing as npt
from pydantic_core import from_json, to_json

from services.scoring.domain.ahp import priorities
from services.scoring.domain.inputs import InputColumns, ScoringInputs
from shared.contracts.scoring import (
    AhpModel,
    Criterion,
    Scales,
    ScoringModel,
    WeightedModel,
    WsjfModel,
)

Floats = npt.NDArray[np.float64]
P = ParamSpec("P")
R = TypeVar("R")

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
    form (its fields in its order, floats as floats)."""

    criterion: str
    raw: float | None
    normalised: float
    weight: float
    contribution: float


@dataclass(frozen=True, slots=True)
class Scored:
    """One project's score and its explanation, as the contract's JSON."""

    score: float
    explanation_json: bytes

    @property
    def explanation(self) -> tuple[Part, ...]:
        return tuple(cast(list[Part], from_json(self.explanation_json)))


@dataclass(frozen=True, slots=True)
class ScoredColumns:
    """Scores of ``keys``, row by row, each with its explanation as the contract's JSON."""

    keys: list[str]
    scores: Floats
    explanations: list[bytes]


def _as_python_floats(function: Callable[P, R]) -> Callable[P, R]:
    """Runs ``function`` with numpy overflowing to infinity (and making NaN of infinities)
    without a word, as Python's float arithmetic does."""

    @functools.wraps(function)
    def quiet(*args: P.args, **kwargs: P.kwargs) -> R:
        with np.errstate(over="ignore", invalid="ignore"):
            return function(*args, **kwargs)

    return quiet


_HALF_WAY_SLACK = 2.0**-52
_EXACT_INTEGERS = 2.0**52


@_as_python_floats
def round6(x: Floats) -> Floats:
    """``round(v, 6)`` of each element, bit for bit.

    Python rounds the exact decimal value of ``v`` to 6 places (half to even) and returns the
    double nearest the result, which is ``n / 1e6`` for that integer ``n`` (one correctly
    rounded division). ``v * 1e6`` is off the exact product by at most ``|v * 1e6| * 2**-53``,
    so where it lies further than that from a half-way point its nearest integer is ``n``;
    the few elements that do not (ties, near-ties, huge or non-finite values) are rounded by
    Python itself."""
    scaled = x * 1e6
    nearest = np.rint(scaled)
    magnitude = np.abs(scaled)
    sure = (np.abs(scaled - nearest) < 0.5 - magnitude * _HALF_WAY_SLACK) & (
        magnitude < _EXACT_INTEGERS
    )
    out: Floats = nearest / 1e6
    if not sure.all():
        doubtful = np.flatnonzero(~sure)
        out[doubtful] = [round(v, 6) for v in x[doubtful].tolist()]
    return out


def float_texts(values: Floats | Sequence[float]) -> list[bytes]:
    """Each number as the contract's JSON writes it (NaN and infinities as ``null``)."""
    if len(values) == 0:
        return []
    listed = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return to_json(listed, inf_nan_mode="null")[1:-1].split(b",")


def _min1(q: Floats) -> Floats:
    """``min(1.0, q)``, element by element."""
    return np.where(q < 1.0, q, 1.0)


def _log_scale(x: Floats, saturation: float) -> Floats:
    """``min(1, log10(1 + max(x, 0)) / log10(1 + saturation))``."""
    shifted = 1 + np.where(x < 0.0, 0.0, x)
    logs = np.fromiter(map(math.log10, shifted.tolist()), np.float64, count=len(x))
    return _min1(logs / math.log10(1 + saturation))


def _fits(fits: Sequence[Mapping[str, float]], objectives: Mapping[str, float]) -> Floats:
    """Each project's mean objective score, weighted by ``objectives`` (unlisted objectives
    weigh 1); NaN where it has none or their weights sum to 0. Projects are taken in groups
    naming the same objectives in the same order (a portfolio has few such groups), and each
    sum is added up in that order, as ``sum`` over the project's mapping would."""
    fitted = np.full(len(fits), math.nan)
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for row, fit in enumerate(fits):
        groups[tuple(fit)].append(row)
    for names, rows in groups.items():
        weights = [objectives.get(o, 1.0) for o in names]
        total = sum(weights)
        if not names or total == 0:
            continue
        # The group's values in one pass, row by row (each mapping's order is ``names``).
        scores = np.fromiter(
            itertools.chain.from_iterable(fits[row].values() for row in rows),
            np.float64,
            count=len(rows) * len(names),
        ).reshape(len(rows), len(names))
        weighted = np.zeros(len(rows))
        for j, weight in enumerate(weights):
            weighted = weighted + scores[:, j] * weight
        fitted[rows] = weighted / total
    return fitted


@_as_python_floats
def raw_column(
    projects: InputColumns,
    criterion: Criterion,
    objectives: Mapping[str, float],
    as_of: int,
) -> Floats:
    """Each project's input for ``criterion`` in its own unit; NaN where it is unknown."""
    if criterion == "strategic_fit":
        return _fits(projects.strategic_fit, objectives)
    if criterion == "value":
        return projects.value
    if criterion == "cost":
        return projects.cost
    if criterion == "value_for_money":
        priced = projects.cost > 0
        return np.where(priced, projects.value / np.where(priced, projects.cost, 1.0), math.nan)
    if criterion == "risk":
        return projects.risk
    if criterion == "urgency":
        return projects.deadline - float(as_of)
    return np.where(projects.mandatory, 1.0, 0.0)


@_as_python_floats
def absolute_column(criterion: Criterion, raw: Floats, scales: Scales) -> Floats:
    """Normalisation on fixed scales (documented in docs/scoring.md), of a whole column."""
    if criterion == "strategic_fit":
        normalised = _min1(raw / 5.0)
    elif criterion == "value":
        normalised = _log_scale(raw, scales.value)
    elif criterion == "cost":
        normalised = 1.0 - _log_scale(raw, scales.cost)
    elif criterion == "value_for_money":
        normalised = _log_scale(raw, scales.value_for_money)
    elif criterion == "risk":
        normalised = (5.0 - raw) / 4.0
    elif criterion == "urgency":
        left = 1.0 - raw / float(scales.urgency_months)
        normalised = _min1(np.where(left > 0.0, left, 0.0))
    else:
        normalised = raw
    return np.where(np.isnan(raw), MISSING[criterion], normalised)


Bounds = dict[str, tuple[float, float]]


@_as_python_floats
def portfolio_bounds(
    projects: InputColumns,
    criteria: Sequence[Criterion],
    objectives: Mapping[str, float],
    as_of: int,
) -> Bounds:
    """Each criterion's lowest and highest known raw value over the ranked projects."""
    bounds: Bounds = {}
    for criterion in criteria:
        raw = raw_column(projects, criterion, objectives, as_of)
        values = raw[projects.ranked & ~np.isnan(raw)].tolist()
        if values:
            bounds[criterion] = (min(values), max(values))
    return bounds


@_as_python_floats
def relative_column(criterion: Criterion, raw: Floats, bounds: Bounds) -> Floats:
    """Min-max normalisation over the portfolio, of a whole column; equal values all normalise
    to 0.5."""
    missing = MISSING[criterion]
    if criterion not in bounds:
        return np.full(len(raw), missing)
    low, high = bounds[criterion]
    if high == low:
        normalised = np.full(len(raw), 0.5)
    else:
        share = (raw - low) / (high - low)
        normalised = 1.0 - share if criterion in LOWER_IS_BETTER else share
    return np.where(np.isnan(raw), missing, normalised)


def _percent_safe(text: bytes) -> bytes:
    return text.replace(b"%", b"%%")


@_as_python_floats
def weighted_sums(
    projects: InputColumns,
    weights: Mapping[Criterion, float],
    *,
    objectives: Mapping[str, float],
    scales: Scales,
    as_of: int,
    bounds: Bounds | None,
) -> ScoredColumns:
    """The weighted score of each project. Each project's sum adds its criteria's shares in
    the order of ``weights``, as a project-by-project sum would."""
    total = np.zeros(len(projects))
    texts: list[list[bytes]] = []
    template = b"["
    for criterion, weight in weights.items():
        raw = raw_column(projects, criterion, objectives, as_of)
        normalised = (
            relative_column(criterion, raw, bounds)
            if bounds is not None
            else absolute_column(criterion, raw, scales)
        )
        share = 100.0 * weight * normalised
        total = total + share
        texts += [
            float_texts(round6(raw)),
            float_texts(round6(normalised)),
            float_texts(round6(share)),
        ]
        template += (
            (b"," if len(template) > 1 else b"")
            + b'{"criterion":'
            + _percent_safe(to_json(criterion))
            + b',"raw":%s,"normalised":%s,"weight":'
            + float_texts([round(weight, 6)])[0]
            + b',"contribution":%s}'
        )
    template += b"]"
    explanations = (
        [template % row for row in zip(*texts, strict=True)] if texts else [b"[]"] * len(projects)
    )
    return ScoredColumns(projects.keys, round6(total), explanations)


_NO_WSJF = b'[{"criterion":"wsjf","raw":null,"normalised":0.0,"weight":1.0,"contribution":0.0}]'
_WSJF = (
    b'[{"criterion":"business_value","raw":%s,"normalised":%s,"weight":1.0,"contribution":%s},'
    b'{"criterion":"time_criticality","raw":%s,"normalised":%s,"weight":1.0,"contribution":%s},'
    b'{"criterion":"risk_reduction","raw":%s,"normalised":%s,"weight":1.0,"contribution":%s},'
    b'{"criterion":"job_size","raw":%s,"normalised":1.0,"weight":0.0,"contribution":0.0}]'
)


@_as_python_floats
def wsjf(projects: InputColumns, model: WsjfModel) -> ScoredColumns:
    """Cost of delay over job size; a job size not given is the demand in person-months over
    ``job_size_unit``, at least 1. Projects without WSJF inputs score 0."""
    inputs = projects.wsjf
    given = ~np.isnan(inputs[:, 0])
    from_demand = projects.effort / model.job_size_unit
    from_demand = np.where(from_demand > 1.0, from_demand, 1.0)
    stated = inputs[:, 3]
    job_size = np.where(np.isnan(stated) | (stated == 0), from_demand, stated)
    rows = np.flatnonzero(given)
    inputs, job_size = inputs[rows], job_size[rows]
    scores = np.zeros(len(projects))
    scores[rows] = round6((0.0 + inputs[:, 0] + inputs[:, 1] + inputs[:, 2]) / job_size)
    texts: list[list[bytes]] = []
    for k in range(3):
        share = float_texts(round6(inputs[:, k] / job_size))
        texts += [float_texts(inputs[:, k]), share, share]
    texts.append(float_texts(round6(job_size)))
    explanations = [_NO_WSJF] * len(projects)
    for row, values in zip(rows.tolist(), zip(*texts, strict=True), strict=True):
        explanations[row] = _WSJF % values
    return ScoredColumns(projects.keys, scores, explanations)


def ahp_weights(model: AhpModel) -> dict[Criterion, float]:
    result = priorities(model.matrix())
    return dict(zip(model.criteria, result.weights, strict=True))


@_as_python_floats
def score_columns(projects: InputColumns, model: ScoringModel, *, as_of: int) -> ScoredColumns:
    """Scores of every project in ``projects`` (of one portfolio). With portfolio
    normalisation every project's score depends on all the others, so pass them all."""
    if isinstance(model, WsjfModel):
        return wsjf(projects, model)
    weights = model.normalised_weights() if isinstance(model, WeightedModel) else ahp_weights(model)
    bounds = (
        portfolio_bounds(projects, list(weights), model.objectives, as_of)
        if model.normalisation == "portfolio"
        else None
    )
    return weighted_sums(
        projects,
        weights,
        objectives=model.objectives,
        scales=model.scales,
        as_of=as_of,
        bounds=bounds,
    )


def score_all(
    projects: Sequence[ScoringInputs],
    model: ScoringModel,
    *,
    as_of: int,
    only: set[str] | None = None,
) -> dict[str, Scored]:
    """Scores of ``projects`` (of one portfolio) by key, or of those keyed in ``only``; the
    bounds of portfolio normalisation are taken over all of ``projects``."""
    scored = score_columns(InputColumns.of(projects), model, as_of=as_of)
    return {
        key: Scored(score, explanation)
        for key, score, explanation in zip(
            scored.keys, scored.scores.tolist(), scored.explanations, strict=True
        )
        if only is None or key in only
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
