"""Scoring's settings (``PMO_SCORING_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DerivedServiceSettings


class ScoringSettings(DerivedServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PMO_SCORING_", extra="ignore")

    group_id: str = "pmo-scoring"
    http_port: int = 8082
    # How long a portfolio's batches must pause before the rank moves of projects that were
    # only pushed along its ranking by another's change are published (docs/scoring.md,
    # "Settling ranks"). 0 publishes them with the batch that moved them.
    rank_settle_ms: int = Field(default=1000, ge=0, le=60_000)
    # The longest those moves wait, from the first of them, when the portfolio's batches do not
    # pause: a steady feed publishes each portfolio's moves about once per this time instead of
    # once per batch. Every settle moves about every project below the portfolio's new ones, and
    # capacity and reporting rewrite each moved row: at 5 s rather than 1 s Postgres spent a
    # tenth less CPU a submission under a steady feed (docs/performance.md). Never shorter than
    # rank_settle_ms.
    rank_settle_max_ms: int = Field(default=5000, ge=0, le=600_000)
