"""Capacity's settings (``PMO_CAPACITY_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.contracts.common import Month
from shared.settings import DerivedServiceSettings


class CapacitySettings(DerivedServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PMO_CAPACITY_", extra="ignore")

    group_id: str = "pmo-capacity"
    http_port: int = 8083
    horizon_months: int = Field(default=24, ge=1, le=120)
    # The plan starts at the current month unless pinned (useful for demos and tests).
    plan_start: Month | None = None
    # The least time between two replans of one portfolio: changes arriving meanwhile are
    # planned together by the next (docs/planning.md, "When plans are made"). 0 replans as soon
    # as a batch asks.
    replan_spacing_ms: int = Field(default=500, ge=0, le=60_000)
