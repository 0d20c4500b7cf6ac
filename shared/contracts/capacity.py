"""Capacity contracts: what-if and optimisation requests (``pmo.capacity.commands.v1``), their
results (``pmo.capacity.scenarios.v1``) and each portfolio's plan summary
(``pmo.capacity.summaries.v1``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, TypeAdapter

from shared.contracts.common import Event, Identifier, Inbound, Month
from shared.contracts.inbound import DemandLine, Stage

ProjectRef = Annotated[str, Field(pattern=r"^[^/\s][^/]*/[^/\s][^/]*$", max_length=300)]
"""A project of the scenario's portfolio as ``source/external_id``."""


class _Change(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AddCapacity(_Change):
    kind: Literal["add_capacity"]
    role: Identifier
    fte: Annotated[float, Field(gt=0, le=1000)]
    from_: Annotated[Month | None, Field(alias="from")] = None
    until: Month | None = None


class RemoveCapacity(_Change):
    """Remove a resource entirely, or ``fte`` of a role over a period."""

    kind: Literal["remove_capacity"]
    resource_id: Identifier | None = None
    role: Identifier | None = None
    fte: Annotated[float, Field(gt=0, le=1000)] | None = None
    from_: Annotated[Month | None, Field(alias="from")] = None
    until: Month | None = None


class SetPriority(_Change):
    kind: Literal["set_priority"]
    project: ProjectRef
    rank: Annotated[int, Field(ge=1)]


class SetWindow(_Change):
    kind: Literal["set_window"]
    project: ProjectRef
    earliest_start: Month | None = None
    deadline: Month | None = None


class DropProject(_Change):
    kind: Literal["drop_project"]
    project: ProjectRef


class AddProject(_Change):
    kind: Literal["add_project"]
    external_id: Identifier
    source: Identifier = "whatif"
    name: Annotated[str, Field(min_length=1, max_length=200)]
    stage: Stage = Stage.PROPOSAL
    mandatory: bool = False
    rank: Annotated[int, Field(ge=1)] | None = None
    priority: Annotated[float, Field(ge=0)] = 0.0
    earliest_start: Month | None = None
    deadline: Month | None = None
    demand: Annotated[list[DemandLine], Field(max_length=50)]
    depends_on: list[Identifier] = Field(default_factory=list)


Change = Annotated[
    AddCapacity | RemoveCapacity | SetPriority | SetWindow | DropProject | AddProject,
    Field(discriminator="kind"),
]


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)] = "what-if"
    description: Annotated[str, Field(max_length=2000)] = ""
    changes: Annotated[list[Change], Field(min_length=1, max_length=200)]


class _Request(Inbound):
    request_id: UUID
    portfolio: Identifier
    author: Annotated[str, Field(min_length=1, max_length=200)]
    issued_at: AwareDatetime


BUDGET = (
    "The most the candidates started may cost in all, in the portfolio's currency (committed"
    " work is not counted); a candidate whose cost is not known, or is more than the budget,"
    " is not started."
)


class WhatIf(_Request):
    """Evaluate ``scenario`` on a copy of the portfolio's plan; the baseline is untouched."""

    action: Literal["whatif"]
    scenario: Scenario


class Optimise(_Request):
    """Solve the portfolio exactly (within ``time_limit_seconds``) and compare with the plan."""

    action: Literal["optimise"]
    objective: Literal["score", "value"] = "score"
    time_limit_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    budget: Annotated[float, Field(ge=0, le=1e15, description=BUDGET)] | None = None


CapacityRequest = Annotated[WhatIf | Optimise, Field(discriminator="action")]
CAPACITY_REQUEST: TypeAdapter[WhatIf | Optimise] = TypeAdapter(CapacityRequest)


class CapacityRequestMessage(RootModel[CapacityRequest]):
    """A message of ``pmo.capacity.commands.v1``: a ``whatif`` or an ``optimise`` request."""


class Placement(Event):
    status: str
    start_month: str | None = None
    end_month: str | None = None


class ProjectDiff(Event):
    project_key: str
    change: Literal["started", "deferred", "moved", "added", "dropped"]
    baseline: Placement | None
    scenario: Placement | None


class CellDiff(Event):
    role: str
    month: str
    capacity_before: float
    demand_before: float
    capacity_after: float
    demand_after: float


class OptimiserReport(Event):
    status: str
    solver: str
    objective: float
    bound: float
    lp_bound: float
    gap: float
    greedy_objective: float
    seconds: float
    budget: float | None = None  # the request's
    # What the candidates started cost in all, in the optimiser's plan and in the greedy plan
    # (costs not known count nothing); with a budget the first is within it, the second may not be.
    cost: float | None = None
    greedy_cost: float | None = None


class ScenarioResult(Event):
    """The answer to a what-if or optimise request: what would change against the plan."""

    TYPE: ClassVar[str] = "pmo.capacity.scenario.evaluated.v1"

    request_id: str
    portfolio: str
    kind: Literal["whatif", "optimise"]
    name: str
    author: str
    computed_at: datetime
    started: int
    deferred: int
    moved: int
    projects: list[ProjectDiff]
    utilisation: list[CellDiff]
    optimiser: OptimiserReport | None = None


class Cell(Event):
    role: str
    month: str
    capacity: float
    demand: float


class ConflictInfo(Event):
    role: str
    month: str
    demand: float
    capacity: float
    projects: list[str]
    suggestion: str


class SkillGapInfo(Event):
    role: str
    month: str
    demand: float
    capacity: float
    gap: float
    uncovered: bool


class PortfolioPlanned(Event):
    """A portfolio's plan after a replan: utilisation per role and month, conflicts in
    committed work and skill gaps. Replaces the previous summary of the portfolio."""

    TYPE: ClassVar[str] = "pmo.capacity.portfolio.planned.v1"

    portfolio: str
    plan_version: int
    horizon_start: str
    horizon_months: int
    planned_at: datetime
    utilisation: list[Cell]
    conflicts: list[ConflictInfo]
    skill_gaps: list[SkillGapInfo]
