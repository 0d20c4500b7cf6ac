"""What scoring reads of a project: its scoring inputs, taken from the canonical project."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.common import month_index
from shared.contracts.events import ProjectState
from shared.contracts.inbound import Stage

RANKED_STAGES = frozenset({Stage.IDEA, Stage.PROPOSAL, Stage.APPROVED, Stage.ACTIVE, Stage.ON_HOLD})


@dataclass(frozen=True, slots=True)
class Wsjf:
    business_value: float
    time_criticality: float
    risk_reduction: float
    job_size: float | None


@dataclass(frozen=True, slots=True)
class ScoringInputs:
    """One project as the scoring rules see it. Months are integers (``month_index``)."""

    key: str
    mandatory: bool
    ranked: bool
    strategic_fit: dict[str, float]
    value: float | None
    cost: float | None
    risk: int | None
    deadline: int | None
    wsjf: Wsjf | None
    effort: float  # person-months of demand

    @classmethod
    def of(cls, key: str, project: ProjectState, withdrawn: bool) -> ScoringInputs:
        wsjf = project.wsjf
        return cls(
            key=key,
            mandatory=project.mandatory,
            ranked=not withdrawn and project.stage in RANKED_STAGES,
            strategic_fit=dict(project.strategic_fit),
            value=project.value,
            cost=project.cost,
            risk=project.risk,
            deadline=month_index(project.deadline) if project.deadline else None,
            wsjf=Wsjf(
                wsjf.business_value, wsjf.time_criticality, wsjf.risk_reduction, wsjf.job_size
            )
            if wsjf
            else None,
            effort=sum(d.fte * d.months for d in project.demand),
        )
