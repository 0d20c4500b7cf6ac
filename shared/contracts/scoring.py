"""Scoring contracts: models as analysts write them (YAML or JSON), the commands that set
models and overrides (``pmo.scoring.commands.v1``), and the audit events of what changed
(``pmo.scoring.audit.v1``).

Three methods: ``weighted`` (criteria with weights), ``wsjf`` (SAFe's weighted shortest job
first) and ``ahp`` (criteria weights derived from pairwise comparisons). See docs/scoring.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    model_validator,
)

from shared.contracts.common import Event, Identifier, Inbound

Criterion = Literal[
    "strategic_fit", "value", "cost", "value_for_money", "risk", "urgency", "mandatory"
]
CRITERIA: tuple[Criterion, ...] = (
    "strategic_fit",
    "value",
    "cost",
    "value_for_money",
    "risk",
    "urgency",
    "mandatory",
)


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Scales(_Spec):
    """Where the absolute normalisation saturates."""

    value: Annotated[float, Field(gt=0)] = 10_000_000
    cost: Annotated[float, Field(gt=0)] = 10_000_000
    value_for_money: Annotated[float, Field(gt=0)] = 10
    urgency_months: Annotated[int, Field(ge=1, le=120)] = 24


class WeightedModel(_Spec):
    """Weighted sum of normalised criteria. Weights need not sum to one; they are normalised.

    ``objectives`` weighs the strategic objectives inside ``strategic_fit`` (objectives not
    listed weigh 1). ``normalisation`` is ``absolute`` (fixed scales: a project's score depends
    on it alone) or ``portfolio`` (min-max over the portfolio's ranked projects: one project's
    change can move every other project's score, so the whole portfolio is rescored)."""

    method: Literal["weighted"] = "weighted"
    weights: dict[Criterion, Annotated[float, Field(ge=0)]]
    objectives: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    normalisation: Literal["absolute", "portfolio"] = "absolute"
    scales: Scales = Scales()

    @model_validator(mode="after")
    def _some_weight(self) -> WeightedModel:
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError("at least one criterion needs a positive weight")
        return self

    def normalised_weights(self) -> dict[Criterion, float]:
        """Weights summing to one, in the canonical order of ``CRITERIA`` (explanations list
        criteria in that order, however the model file ordered them)."""
        total = sum(self.weights.values())
        return {c: self.weights[c] / total for c in CRITERIA if self.weights.get(c, 0) > 0}


class WsjfModel(_Spec):
    """Cost of delay (business value + time criticality + risk reduction) divided by job size.
    Job size is the project's own ``wsjf.job_size`` or, when absent, its demand in
    person-months divided by ``job_size_unit``."""

    method: Literal["wsjf"] = "wsjf"
    job_size_unit: Annotated[float, Field(gt=0)] = 6.0


def _fraction(value: Any) -> Any:
    """Judgements may be written as fractions: ``"1/3"``."""
    if isinstance(value, str) and "/" in value:
        top, _, bottom = value.partition("/")
        try:
            return float(top) / float(bottom)
        except (ValueError, ZeroDivisionError):
            return value
    return value


# Saaty's scale 1/9 … 9; a reciprocal written to three decimals (0.111) is accepted.
Judgement = Annotated[float, BeforeValidator(_fraction), Field(ge=0.111, le=9)]


class AhpModel(_Spec):
    """Criteria weights from Saaty's pairwise comparisons: ``comparisons["a"]["b"] = 3`` means
    ``a`` is moderately more important than ``b`` (1 equal … 9 extreme; reciprocals implied).
    Every pair must be judged once. The weighted sum then uses those weights."""

    method: Literal["ahp"] = "ahp"
    criteria: Annotated[list[Criterion], Field(min_length=2, max_length=7)]
    comparisons: dict[Criterion, dict[Criterion, Judgement]]
    objectives: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    normalisation: Literal["absolute", "portfolio"] = "absolute"
    scales: Scales = Scales()

    @model_validator(mode="after")
    def _every_pair_once(self) -> AhpModel:
        if len(set(self.criteria)) != len(self.criteria):
            raise ValueError("criteria repeat")
        seen: set[frozenset[str]] = set()
        for a, row in self.comparisons.items():
            for b in row:
                if a == b or a not in self.criteria or b not in self.criteria:
                    raise ValueError(f"{a} vs {b}: both must be distinct listed criteria")
                pair = frozenset((a, b))
                if pair in seen:
                    raise ValueError(f"{a} vs {b} is judged twice")
                seen.add(pair)
        n = len(self.criteria)
        if len(seen) != n * (n - 1) // 2:
            raise ValueError(f"{n} criteria need {n * (n - 1) // 2} judgements, got {len(seen)}")
        return self

    def matrix(self) -> list[list[float]]:
        index = {c: i for i, c in enumerate(self.criteria)}
        n = len(self.criteria)
        m = [[1.0] * n for _ in range(n)]
        for a, row in self.comparisons.items():
            for b, judgement in row.items():
                m[index[a]][index[b]] = judgement
                m[index[b]][index[a]] = 1 / judgement
        return m


ScoringModel = Annotated[WeightedModel | WsjfModel | AhpModel, Field(discriminator="method")]


class ModelEnvelope(_Spec):
    """A model with its portfolio-level identity, as stored and published."""

    name: Annotated[str, Field(min_length=1, max_length=100)] = "unnamed"
    description: Annotated[str, Field(max_length=2000)] = ""
    model: ScoringModel


DEFAULT_MODEL = WeightedModel(
    weights={"strategic_fit": 0.4, "value_for_money": 0.4, "risk": 0.2},
)
DEFAULT_NAME = "weighted-default"


Justification = Annotated[str, Field(min_length=10, max_length=2000)]
Author = Annotated[str, Field(min_length=1, max_length=200)]
ProjectKey = Annotated[str, Field(pattern=r"^[^/\s][^/]*/[^/\s][^/]*/[^/\s][^/]*$", max_length=400)]


class _Command(Inbound):
    command_id: UUID
    portfolio: Identifier
    author: Author
    issued_at: AwareDatetime
    comment: Annotated[str, Field(max_length=2000)] = ""


class SetModel(_Command):
    """Use ``model`` for the portfolio from now on: a new model version, and a full rescore."""

    action: Literal["set_model"]
    model: ModelEnvelope


class Pin(_Command):
    """Hold a project at ``rank`` (never above a mandatory project)."""

    action: Literal["pin"]
    project_key: ProjectKey
    rank: Annotated[int, Field(ge=1, le=1_000_000)]
    justification: Justification


class Adjust(_Command):
    """Add ``delta`` to a project's score."""

    action: Literal["adjust"]
    project_key: ProjectKey
    delta: Annotated[float, Field(ge=-1000, le=1000)]
    justification: Justification


class ClearOverride(_Command):
    """Remove a project's pin or adjustment."""

    action: Literal["clear_override"]
    project_key: ProjectKey
    justification: Justification


class Rescore(_Command):
    """Rescore the whole portfolio now (for instance after a month rolls over)."""

    action: Literal["rescore"]


ScoringCommand = Annotated[
    SetModel | Pin | Adjust | ClearOverride | Rescore, Field(discriminator="action")
]


class ScoringCommandMessage(RootModel[ScoringCommand]):
    """A message of ``pmo.scoring.commands.v1`` (one of the commands above, by ``action``)."""


SCORING_COMMAND: TypeAdapter[SetModel | Pin | Adjust | ClearOverride | Rescore] = TypeAdapter(
    ScoringCommand
)


class OverrideInfo(Event):
    """An analyst's pin or adjustment, as shown with the project's score."""

    kind: Literal["pin", "adjust"]
    justification: str
    author: str
    rank: int | None = None
    delta: float | None = None


class ScoringAudit(Event):
    """One change to a portfolio's scoring, who made it and why; refused changes too."""

    TYPE: ClassVar[str] = "pmo.scoring.audit.v1"

    command_id: str
    portfolio: str
    action: str
    author: str
    at: datetime
    outcome: Literal["applied", "refused"]
    detail: dict[str, Any]
    comment: str = ""
