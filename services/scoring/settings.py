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
    # 0 publishes them with the batch that moved them. Every settle moves about every project
    # below the portfolio's new ones, so capacity and reporting rewrite that many rows and
    # reporting republishes them to the warehouse: at 5 s rather than 1 s, Postgres spent a
    # tenth less a submission under a steady feed (docs/performance.md).
    rank_settle_ms: int = Field(default=5000, ge=0, le=60_000)
