"""Capacity's settings (``PMO_CAPACITY_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.contracts.common import Month
from shared.settings import ServiceSettings


class CapacitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PMO_CAPACITY_", extra="ignore")

    group_id: str = "pmo-capacity"
    http_port: int = 8083
    horizon_months: int = Field(default=24, ge=1, le=120)
    # The plan starts at the current month unless pinned (useful for demos and tests).
    plan_start: Month | None = None
