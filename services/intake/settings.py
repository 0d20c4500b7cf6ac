"""Intake's settings (``PMO_INTAKE_*``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PMO_INTAKE_", extra="ignore")

    group_id: str = "pmo-intake"
    http_port: int = 8081
