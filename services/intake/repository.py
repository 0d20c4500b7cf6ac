"""Intake's SQL: the only module that knows its tables."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asyncpg.pool import PoolConnectionProxy

from services.intake.domain import PortfolioView, StoredProject
from shared.contracts.events import ProjectState
from shared.db import insert_rows
from shared.errors import Reason
from shared.uow import PostgresUnitOfWork, UnitOfWork


@dataclass(frozen=True, slots=True)
class LogEntry:
    submission_id: str | None
    project_key: str | None
    revision: int | None
    outcome: str
    code: str | None
    reasons: Sequence[Reason]
    topic: str
    partition: int
    offset: int


class ProjectRepository:
    def __init__(self, conn: PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def load(self, keys: Iterable[str]) -> dict[str, StoredProject]:
        # Through the primary key from the session's first batch (migration 0005).
        rows = await self._conn.fetch("SELECT * FROM stored_projects($1::text[])", list(keys))
        return {
            r["project_key"]: StoredProject(
                revision=r["revision"],
                withdrawn=r["withdrawn"],
                state=ProjectState.model_validate_json(r["state"]) if r["state"] else None,
                portfolio=r["portfolio"],
                external_id=r["external_id"],
            )
            for r in rows
        }

    async def save(self, projects: Iterable[tuple[str, StoredProject]]) -> None:
        rows = [
            (
                key,
                p.portfolio,
                p.revision,
                p.withdrawn,
                p.state.stage.value if p.state else None,
                p.state.name if p.state else None,
                p.state.model_dump_json() if p.state else None,
                p.external_id,
                p.state.depends_on if p.state else [],
            )
            for key, p in projects
        ]
        if not rows:
            return
        await self._conn.executemany(
            "INSERT INTO projects (project_key, portfolio, revision, withdrawn, stage, name, state,"
            " external_id, depends_on) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)"
            " ON CONFLICT (project_key) DO UPDATE SET revision = excluded.revision,"
            " withdrawn = excluded.withdrawn, stage = excluded.stage, name = excluded.name,"
            " state = excluded.state, depends_on = excluded.depends_on, updated_at = now()",
            rows,
        )

    async def count_changes(self, portfolios: Collection[str]) -> dict[str, int]:
        """Count a change of each of ``portfolios``; returns their new counts. The rows stay
        locked until the transaction ends (taken in name order, so two batches cannot
        deadlock), so batches of one portfolio count up one at a time."""
        if not portfolios:
            return {}
        rows = await self._conn.fetch(
            "INSERT INTO portfolio_versions (portfolio, version)"
            " SELECT p, 1 FROM unnest($1::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n"
            " ON CONFLICT (portfolio) DO UPDATE SET version = portfolio_versions.version + 1"
            " RETURNING portfolio, version",
            sorted(set(portfolios)),
        )
        return {r["portfolio"]: r["version"] for r in rows}

    async def portfolio_views(self, portfolios: Iterable[str]) -> dict[str, PortfolioView]:
        """Dependencies and names of the open projects of ``portfolios``."""
        rows = await self._conn.fetch(
            "SELECT portfolio, project_key, external_id, name, depends_on FROM projects"
            " WHERE portfolio = ANY($1::text[]) AND NOT withdrawn",
            list(portfolios),
        )
        views: dict[str, PortfolioView] = {}
        for r in rows:
            view = views.setdefault(r["portfolio"], PortfolioView())
            view.add_name(r["project_key"], r["external_id"], r["name"])
            if r["depends_on"]:
                view.dependencies[r["external_id"]] = list(r["depends_on"])
        return views

    async def log(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        await insert_rows(
            self._conn,
            "submission_log",
            (
                ("submission_id", "text"),
                ("project_key", "text"),
                ("revision", "bigint"),
                ("outcome", "text"),
                ("code", "text"),
                ("reasons", "jsonb"),
                ("source_topic", "text"),
                ("source_partition", "int"),
                ("source_offset", "bigint"),
            ),
            [
                (
                    e.submission_id,
                    e.project_key,
                    e.revision,
                    e.outcome,
                    e.code,
                    json.dumps([r.as_dict() for r in e.reasons]),
                    e.topic,
                    e.partition,
                    e.offset,
                )
                for e in entries
            ],
        )


class ProjectStore(Protocol):
    """The port intake's handler needs for its state."""

    async def load(self, keys: Iterable[str]) -> dict[str, StoredProject]: ...

    async def save(self, projects: Iterable[tuple[str, StoredProject]]) -> None: ...

    async def count_changes(self, portfolios: Collection[str]) -> dict[str, int]: ...

    async def portfolio_views(self, portfolios: Iterable[str]) -> dict[str, PortfolioView]: ...

    async def log(self, entries: Sequence[LogEntry]) -> None: ...


class IntakeTransaction(UnitOfWork, Protocol):
    @property
    def projects(self) -> ProjectStore: ...


class IntakeUnitOfWork(PostgresUnitOfWork):
    projects: ProjectRepository

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.projects = ProjectRepository(conn)
