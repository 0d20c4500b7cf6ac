"""How intake reads a batch's stored projects, on real Postgres: through the primary key from a
session's first batch, however few rows the table held when the session planned the read."""

from __future__ import annotations

import asyncpg
import pytest

from services.intake.domain import StoredProject
from services.intake.repository import IntakeUnitOfWork
from shared.contracts.events import ProjectState
from shared.db import create_pool
from shared.migrations import migrate, service_component
from shared.settings import DatabaseSettings
from tests.conftest import service_url

pytestmark = pytest.mark.integration


def stored(external_id: str, revision: int) -> tuple[str, StoredProject]:
    state = ProjectState(
        name=f"{external_id} {revision}", portfolio="p", source="s", external_id=external_id
    )
    project = StoredProject(
        revision=revision, withdrawn=False, state=state, portfolio="p", external_id=external_id
    )
    return f"p/s/{external_id}", project


async def scans(database: DatabaseSettings) -> tuple[int, int]:
    """The projects table's sequential and index scans so far, of sessions that have ended."""
    conn = await asyncpg.connect(database.url)
    try:
        row = await conn.fetchrow(
            "SELECT seq_scan, idx_scan FROM pg_stat_user_tables"
            " WHERE schemaname = 'intake' AND relname = 'projects'"
        )
    finally:
        await conn.close()
    assert row is not None
    return row["seq_scan"], row["idx_scan"] or 0


async def test_a_batch_s_projects_are_read_through_the_key_from_an_empty_table(
    database: DatabaseSettings,
) -> None:
    """A session plans a prepared statement for its first five runs, then keeps a generic plan
    for as long as it lives: planned while the table held a few rows, the read by a batch's
    keys was a sequential scan, and every later batch read the whole table (migration 0005).
    One session reads and writes twenty batches from an empty table, new projects and new
    revisions of earlier ones, and no read scans the table. (A session's counts reach the
    statistics when it ends.)"""
    await migrate(database.url, [service_component("intake")])
    seq_before, idx_before = await scans(database)
    pool = await create_pool(
        service_url(database, "intake"), schema="intake", application_name="t", max_size=1
    )
    try:
        for batch in range(20):
            written = [stored(f"N{batch}-{i}", 1) for i in range(3)]
            written += [stored(f"N{b}-0", batch + 1) for b in range(batch)]
            async with IntakeUnitOfWork(pool) as uow:
                opened = await uow.open_batch(
                    [(f"submission {batch}", "p")], [key for key, _ in written]
                )
                # What was written before is read back as it was written.
                # (the last batch's first project is still at its first revision).
                assert {k: p.revision for k, p in opened.stored.items()} == {
                    f"p/s/N{b}-0": batch if b < batch - 1 else 1 for b in range(batch)
                }
                assert all(p.state is not None for p in opened.stored.values())
                assert opened.fresh == {f"submission {batch}"}
                assert opened.versions == {"p": batch + 1}
                await uow.projects.save(written)
    finally:
        await pool.close()
    seq_after, idx_after = await scans(database)
    assert idx_after > idx_before
    assert seq_after == seq_before, (seq_before, seq_after)
