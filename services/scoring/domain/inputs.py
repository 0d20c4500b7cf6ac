"""What scoring reads of a project: its scoring inputs, taken from the canonical project."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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


def _floats(values: Sequence[float | None]) -> npt.NDArray[np.float64]:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class InputColumns:
    """Projects' scoring inputs as columns, one array per input, row ``i`` being project
    ``keys[i]``: what the scoring rules take for a whole portfolio at once. NaN marks an unknown
    number (validated inputs are never NaN); a project without WSJF inputs has a NaN
    ``wsjf[i, 0]``."""

    keys: list[str]
    mandatory: npt.NDArray[np.bool_]
    ranked: npt.NDArray[np.bool_]
    strategic_fit: list[dict[str, float]]
    value: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]
    risk: npt.NDArray[np.float64]
    deadline: npt.NDArray[np.float64]
    # business value, time criticality, risk reduction, job size
    wsjf: npt.NDArray[np.float64]
    effort: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, projects: Sequence[ScoringInputs]) -> InputColumns:
        none = (math.nan, math.nan, math.nan, math.nan)
        return cls(
            keys=[p.key for p in projects],
            mandatory=np.array([p.mandatory for p in projects], dtype=np.bool_),
            ranked=np.array([p.ranked for p in projects], dtype=np.bool_),
            strategic_fit=[p.strategic_fit for p in projects],
            value=_floats([p.value for p in projects]),
            cost=_floats([p.cost for p in projects]),
            risk=_floats([p.risk for p in projects]),
            deadline=_floats([p.deadline for p in projects]),
            wsjf=np.array(
                [
                    (
                        w.business_value,
                        w.time_criticality,
                        w.risk_reduction,
                        math.nan if w.job_size is None else w.job_size,
                    )
                    if (w := p.wsjf)
                    else none
                    for p in projects
                ],
                dtype=np.float64,
            ).reshape(len(projects), 4),
            effort=np.array([p.effort for p in projects], dtype=np.float64),
        )
