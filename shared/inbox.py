"""The inbox: the ids of events already applied, recorded in the same transaction as their
effect, so that a redelivered event is recognised and skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg


async def claim(conn: asyncpg.Connection[Any], event_ids: Sequence[str]) -> set[str]:
    """Record ``event_ids`` inside the caller's transaction; returns the ones not seen before.

    Nothing is visible to other consumers until the transaction commits; a concurrent claim of
    the same id waits on the row lock and then sees it as a duplicate."""
    if not event_ids:
        return set()
    rows = await conn.fetch(CLAIM.format(ids="$1::text[]"), list(dict.fromkeys(event_ids)))
    return {r["event_id"] for r in rows}


# The claim of ``{ids}`` (an array without repeats), returning the ids not seen before; a
# statement of its own (``claim``) or a part of a service's larger one.
CLAIM = (
    "INSERT INTO inbox (event_id) SELECT unnest({ids})"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


async def release(conn: asyncpg.Connection[Any], event_ids: Sequence[str]) -> None:
    """Forget ``event_ids`` inside the caller's transaction: the event had no effect (it was
    refused), so the same event sent again, after a fix, must be processed again."""
    await conn.execute("DELETE FROM inbox WHERE event_id = ANY($1::text[])", list(event_ids))


async def seen(conn: asyncpg.Connection[Any], event_ids: Sequence[str]) -> set[str]:
    """Which of ``event_ids`` are recorded already (a read, not a claim)."""
    rows = await conn.fetch(
        "SELECT event_id FROM inbox WHERE event_id = ANY($1::text[])", list(event_ids)
    )
    return {r["event_id"] for r in rows}
