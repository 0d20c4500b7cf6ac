"""Scoring's settings (``PMO_SCORING_*``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PMO_SCORING_", extra="ignore")

    group_id: str = "pmo-scoring"
    http_port: int = 8082
