"""Scoring's settings (``PMO_SCORING_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DerivedServiceSettings


class ScoringSettings(DerivedServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PMO_SCORING_", extra="ignore")

    group_id: str = "pmo-scoring"
    http_port: int = 8082
    # How long the rank moves of projects that were only pushed along the ranking by another's
    # change may wait to be published, so that a steady feed publishes each portfolio's moves
    # about once per this time instead of once per batch (docs/scoring.md, "Settling ranks").
    # 0 publishes them with the batch that moved them.
    rank_settle_ms: int = Field(default=1000, ge=0, le=60_000)
