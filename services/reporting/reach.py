"""How far back ``as_of`` reaches, for the API and the dashboard alike.

The history answers an instant as it was from the later of two bounds on: the retention's
window (``history_retention_days``) and the latest cutoff a sweep recorded
(``history_kept``; services/reporting/retention.py). An instant before it is refused, not
answered from what a sweep left, even when the window has grown or the retention was unset
since that sweep. The window is checked before the reads (no database needed); the cutoff by
each read of the history itself, in its own snapshot (``history_answers``, migration 0018), so
that a sweep recording a later one meanwhile is seen too: that read fails with ``SWEPT``, which
is answered with a 422 naming the cutoff (``swept``)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator

from services.reporting.repository import ReadModelQueries
from services.reporting.settings import ReportingSettings

# What a read of the history raises for an instant before the recorded cutoff (its detail the
# cutoff, in UTC).
SWEPT = "PM001"


def in_utc(at: datetime | None) -> datetime | None:
    """An instant in UTC; one that names no offset is in UTC already. One that UTC cannot
    hold (the first or last hours of the calendar, with an offset) is refused."""
    if at is None or at.tzinfo is None:
        return None if at is None else at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is outside the range of dates UTC can hold") from None


def query_error(name: str, msg: str) -> RequestValidationError:
    """A 422 for the query parameter ``name``, shaped as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": ["query", name], "msg": msg}])


def swept(exc: asyncpg.PostgresError, name: str) -> RequestValidationError | None:
    """The 422 for the query parameter ``name`` when ``exc`` is a read's refusal of an
    instant the history no longer answers (``SWEPT``); None for any other error."""
    if exc.sqlstate != SWEPT or exc.detail is None:
        return None
    kept = datetime.fromisoformat(exc.detail).isoformat()  # as isoformat() names instants
    return query_error(
        name, f"the history before it has been swept: {name} must be at or after {kept}"
    )


# An instant of a query parameter, in UTC when it names no offset.
Instant = Annotated[datetime, AfterValidator(in_utc)]


class HistoryReach:
    """A FastAPI dependency: the request's ``as_of`` query parameter, in UTC, once the kept
    history answers it as it was: a 422 naming the window's start before the retention's window
    (``check``); the reads refuse one before a sweep's recorded cutoff (``swept``)."""

    def __init__(
        self, settings: ReportingSettings, queries: Callable[[], ReadModelQueries]
    ) -> None:
        self._days = settings.history_retention_days
        self._queries = queries

    def window(self) -> datetime | None:
        """Where the retention's window starts now; None without a retention."""
        return None if self._days is None else datetime.now(UTC) - timedelta(days=self._days)

    async def earliest(self) -> datetime | None:
        """The earliest instant the history answers as it was: the later of the window's start
        and the recorded cutoff (read now: a sweep may move it on); None when all is kept."""
        bounds = [b for b in (self.window(), await self._queries().kept_from()) if b is not None]
        return max(bounds, default=None)

    async def __call__(
        self,
        as_of: Annotated[
            datetime | None,
            Query(
                description="Read the portfolio as it was at this instant (UTC without an"
                " offset; before the kept history, which GET /api/v1/history names, a 422)."
            ),
            AfterValidator(in_utc),
        ] = None,
    ) -> datetime | None:
        if as_of is not None:
            self.check(as_of, "as_of")
        return as_of

    def check(self, at: datetime, name: str) -> None:
        """A 422 for the query parameter ``name`` when ``at`` is before the retention's window.
        One before a sweep's recorded cutoff is refused by the read itself (``swept``)."""
        window = self.window()
        if window is not None and at < window:
            raise query_error(
                name,
                f"the history is kept for {self._days} days:"
                f" {name} must be at or after {window.isoformat()}",
            )
