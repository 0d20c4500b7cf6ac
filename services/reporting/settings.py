"""Reporting's settings (``PMO_REPORTING_*``; the API token is ``PMO_API_TOKEN``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import DERIVED_WAIT_MS, ServiceSettings


class ReportingSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="PMO_REPORTING_", extra="ignore", populate_by_name=True
    )

    group_id: str = "pmo-reporting"
    http_port: int = 8080
    api_token: SecretStr = Field(
        validation_alias=AliasChoices("PMO_API_TOKEN", "PMO_REPORTING_API_TOKEN")
    )
    # More tokens, with scopes and portfolios: see services/reporting/auth.py.
    api_tokens: str = Field(
        default="", validation_alias=AliasChoices("PMO_API_TOKENS", "PMO_REPORTING_API_TOKENS")
    )
    max_page_size: int = Field(default=1000, ge=1)
    # How often the warehouse topic's coalesced records go out (services/reporting/handlers.py).
    warehouse_interval_ms: int = Field(default=500, ge=10)
    # How long the warehouse record of a project only moved in its portfolio's ranking may wait,
    # so that a busy portfolio's moves are published a few times a minute (docs/reporting.md).
    warehouse_rank_delay_ms: int = Field(default=5000, ge=0, le=600_000)
    # How long the warehouse record of a project whose own data changed (project, score, plan)
    # may wait, so that a new project's intake, score and plan go out as one record.
    warehouse_change_delay_ms: int = Field(default=1000, ge=0, le=600_000)
    # How long the warehouse record of a project still without its own data, score or plan (a
    # new one) may wait for them: it goes out once all are in, within the change delay.
    warehouse_derived_wait_ms: int = Field(default=30_000, ge=0, le=600_000)
    # How long the history is kept (projects' versions, rank moves, plan summaries): what no
    # instant within this many days reads is deleted by the workers, and the API refuses an
    # ``as_of`` before it. Unset (the default) keeps every version (docs/reporting.md,
    # "History retention"). The API's processes need the same value as the workers'.
    history_retention_days: int | None = Field(default=None, ge=1, le=36_500)
    # How often a worker sweeps the history for what the retention lets go.
    history_sweep_interval_seconds: float = Field(default=3600.0, gt=0)
    # Project changes get a consumer of their own, so that a new or revised project is shown
    # without waiting behind a batch of scores, rank moves and plans (docs/reporting.md).
    projects_lane: bool = True
    # How long the broker may hold a fetch of project changes that has no data yet: shorter
    # than the other services' path wait (shared.settings.ServiceSettings), since a held fetch
    # of this hop mostly waits for intake's next record, and a broker that looks for records
    # again only at half the wait (tansu) answers it up to that late (docs/performance.md).
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    # The fetch wait and batch timeout of a consumer that takes no project changes (scores,
    # plans and the other derived topics: the others role's, or the consumer beside the
    # projects lane), which is derived work. A consumer of project changes, on a submission's
    # path, keeps FETCH_MAX_WAIT_MS and BATCH_TIMEOUT_MS (shared.settings.DERIVED_WAIT_MS).
    derived_wait_ms: int = Field(default=DERIVED_WAIT_MS, ge=1)
    # What this process does (docs/reporting.md, "Roles"): ``all`` consumes every topic and
    # serves the API; ``worker`` consumes every topic (and serves health and metrics); a worker
    # may also be split in two, ``projects`` (project changes alone) and ``others`` (every
    # other topic, and the warehouse feed), so that a project change is never applied behind
    # a batch of scores on one event loop; ``api`` serves the API and dashboard from the read
    # model and consumes nothing. An ``api`` process needs consuming ones beside it: their
    # relay publishes the scenario requests it writes.
    role: Literal["all", "worker", "projects", "others", "api"] = "all"
