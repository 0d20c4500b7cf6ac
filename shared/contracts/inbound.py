"""Inbound contracts, written by upstream systems (Jira, ServiceNow, spreadsheets, HR systems).

``pmo.intake.submissions.v1`` and ``pmo.capacity.resources.v1`` exactly as published in the
contract: optional fields may be added, none renamed or removed without a new topic version.
Structural rules (types, ranges, formats, sizes) live here; lifecycle and cross-project rules
belong to the services' domains.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, model_validator

from shared.contracts.common import Identifier, Inbound, Month, month_index

MAX_DEMAND_LINES = 50
MAX_DEPENDENCIES = 100
MAX_OBJECTIVES = 30

Text = Annotated[str, Field(max_length=200)]


class Stage(StrEnum):
    IDEA = "idea"
    PROPOSAL = "proposal"
    APPROVED = "approved"
    ACTIVE = "active"
    DONE = "done"
    ON_HOLD = "on_hold"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Wsjf(Inbound):
    """SAFe WSJF inputs on the modified Fibonacci scale (any positive figure is accepted)."""

    business_value: Annotated[float, Field(ge=0, le=100)]
    time_criticality: Annotated[float, Field(ge=0, le=100)]
    risk_reduction: Annotated[float, Field(ge=0, le=100)]
    job_size: Annotated[float, Field(gt=0, le=100)]


class DemandLine(Inbound):
    """``fte`` of ``role`` for ``months`` months, starting ``start_month`` months after the
    project's start."""

    role: Identifier
    fte: Annotated[float, Field(gt=0, le=1000)]
    start_month: Annotated[int, Field(ge=0, le=120)]
    months: Annotated[int, Field(ge=1, le=120)]


class ProjectData(Inbound):
    """The project as the upstream system sees it."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=5000)] = ""
    program: Text | None = None
    sponsor: Text | None = None
    stage: Stage = Stage.IDEA
    mandatory: bool = False
    value: Annotated[float, Field(ge=0, le=1e13)] | None = None
    cost: Annotated[float, Field(ge=0, le=1e13)] | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    strategic_fit: Annotated[
        dict[Identifier, Annotated[float, Field(ge=0, le=5)]],
        Field(max_length=MAX_OBJECTIVES),
    ] = Field(default_factory=dict)
    risk: Annotated[int, Field(ge=1, le=5)] | None = None
    wsjf: Wsjf | None = None
    earliest_start: Month | None = None
    deadline: Month | None = None
    demand: Annotated[list[DemandLine], Field(max_length=MAX_DEMAND_LINES)] = Field(
        default_factory=list
    )
    depends_on: Annotated[list[Identifier], Field(max_length=MAX_DEPENDENCIES)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _window(self) -> ProjectData:
        if (
            self.earliest_start
            and self.deadline
            and month_index(self.deadline) < month_index(self.earliest_start)
        ):
            raise ValueError("deadline is before earliest_start")
        if self.earliest_start and self.deadline:
            window = month_index(self.deadline) - month_index(self.earliest_start) + 1
            if self.duration_months > window:
                raise ValueError(
                    f"demand runs {self.duration_months} months but the window from "
                    f"{self.earliest_start} to {self.deadline} has {window}"
                )
        return self

    @property
    def duration_months(self) -> int:
        """Months from the project's start to the end of its last demand line (at least 1)."""
        return max((d.start_month + d.months for d in self.demand), default=1)


class ProjectSubmission(Inbound):
    """A message on ``pmo.intake.submissions.v1``, key ``{portfolio}/{source}/{external_id}``."""

    submission_id: UUID
    portfolio: Identifier
    source: Identifier
    external_id: Identifier
    revision: Annotated[int, Field(ge=0, le=2**53)]
    submitted_at: AwareDatetime
    action: Literal["upsert", "withdraw"]
    project: ProjectData | None = None

    @model_validator(mode="after")
    def _project_required_for_upsert(self) -> ProjectSubmission:
        if self.action == "upsert" and self.project is None:
            raise ValueError("an upsert needs a project")
        return self


class CapacityException(Inbound):
    month: Month
    fte: Annotated[float, Field(ge=0, le=1000)]


class ResourceUpdate(Inbound):
    """A message on ``pmo.capacity.resources.v1``, key ``{portfolio}/{resource_id}``."""

    update_id: UUID
    portfolio: Identifier
    resource_id: Identifier
    revision: Annotated[int, Field(ge=0, le=2**53)]
    action: Literal["upsert", "withdraw"] = "upsert"
    name: Annotated[str, Field(max_length=200)] = ""
    role: Identifier | None = None
    fte: Annotated[float, Field(ge=0, le=1000)] = 0.0
    from_: Annotated[Month | None, Field(alias="from")] = None
    until: Month | None = None
    exceptions: Annotated[list[CapacityException], Field(max_length=240)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _consistent(self) -> ResourceUpdate:
        if self.action == "upsert":
            if self.role is None:
                raise ValueError("an upsert needs a role")
            if self.from_ is None:
                raise ValueError("an upsert needs 'from'")
        if self.from_ and self.until and month_index(self.until) < month_index(self.from_):
            raise ValueError("until is before from")
        return self


__all__ = [
    "CapacityException",
    "DemandLine",
    "ProjectData",
    "ProjectSubmission",
    "ResourceUpdate",
    "Stage",
    "Wsjf",
]
