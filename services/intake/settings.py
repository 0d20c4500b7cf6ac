"""Intake's settings (``PMO_INTAKE_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DERIVED_WAIT_MS, ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PMO_INTAKE_", extra="ignore")

    group_id: str = "pmo-intake"
    http_port: int = 8081
    # What this process does (docs/intake.md, "Roles"): ``all`` applies submissions and
    # searches the projects they open for possible duplicates; ``submissions`` only applies
    # them, on a submission's path; ``duplicates`` only searches, which is derived work (run
    # it at a lower CPU priority beside the path: docs/operations.md, "CPU weights").
    role: Literal["all", "submissions", "duplicates"] = "all"
    # The fetch wait and batch timeout of the duplicate search's consumer, which is derived
    # work; the submissions' consumer keeps FETCH_MAX_WAIT_MS and BATCH_TIMEOUT_MS.
    derived_wait_ms: int = Field(default=DERIVED_WAIT_MS, ge=1)
