"""Value types shared by several contracts."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def _month(value: str) -> str:
    if not _MONTH.match(value):
        raise ValueError("must be a month as YYYY-MM")
    return value


Month = Annotated[str, AfterValidator(_month)]
"""A calendar month, ``YYYY-MM``."""

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^/\s][^/]*$")]
"""Portfolio, source, external and resource ids: non-empty, no slash (it separates key parts)."""


def month_index(month: str) -> int:
    """Months since year 0, so that month arithmetic is integer arithmetic."""
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def month_from_index(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


class Inbound(BaseModel):
    """Inbound contracts are written by other teams: unknown fields are ignored, not refused;
    types are strict (``"100"`` is not a number, ``true`` is not 1) and infinities are refused.
    Parse them from JSON (``model_validate_json``), where strict mode still reads timestamps,
    UUIDs and enums from strings."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", str_strip_whitespace=True, strict=True, allow_inf_nan=False
    )


class Event(BaseModel):
    """Internal event payloads: immutable facts; unknown fields are tolerated."""

    model_config = ConfigDict(frozen=True, extra="ignore")


def project_key(portfolio: str, source: str, external_id: str) -> str:
    """The Kafka key and identity of a project: ``portfolio/source/external_id``."""
    return f"{portfolio}/{source}/{external_id}"
