"""Intake's SQL: the only module that knows its tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asyncpg.pool import PoolConnectionProxy

from services.intake.domain import PortfolioNames, PortfolioView, StoredProject
from shared import inbox
from shared.contracts.events import ProjectState
from shared.db import Statement, insert_statement, unnest_arguments
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


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """What a batch's transaction starts from (``IntakeUnitOfWork.open_batch``)."""

    fresh: set[str]  # the inbox ids the inbox had not seen, now claimed
    stored: dict[str, StoredProject]  # the stored projects of the batch's keys
    versions: dict[str, int]  # each portfolio with a fresh submission: its new change count


class ProjectRepository:
    def __init__(self, conn: PoolConnectionProxy[Any], defer: Callable[[Statement], None]) -> None:
        self._conn = conn
        self._defer = defer

    async def save(self, projects: Iterable[tuple[str, StoredProject]]) -> None:
        """Write these projects when the transaction commits (``PostgresUnitOfWork.defer``);
        a project's dependencies are its state's."""
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
            )
            for key, p in projects
        ]
        if rows:
            arrays, values = unnest_arguments(_PROJECT_COLUMNS, rows)
            self._defer(Statement(_SAVE.format(arrays=arrays), tuple(values)))

    async def portfolio_views(self, portfolios: Iterable[str]) -> dict[str, PortfolioView]:
        """Dependencies of the open projects of ``portfolios``."""
        rows = await self._conn.fetch(
            "SELECT portfolio, external_id, depends_on FROM projects"
            " WHERE portfolio = ANY($1::text[]) AND NOT withdrawn AND depends_on <> '{}'",
            list(portfolios),
        )
        views: dict[str, PortfolioView] = {}
        for r in rows:
            views.setdefault(r["portfolio"], PortfolioView()).dependencies[r["external_id"]] = list(
                r["depends_on"]
            )
        return views

    async def portfolio_names(self, portfolios: Iterable[str]) -> dict[str, PortfolioNames]:
        """The names of the open projects of ``portfolios``, and the revision of each project
        (withdrawn ones too), as the duplicate search starts from them."""
        rows = await self._conn.fetch(
            "SELECT portfolio, project_key, external_id, name, revision, withdrawn FROM projects"
            " WHERE portfolio = ANY($1::text[]) ORDER BY updated_at, project_key",
            list(portfolios),
        )
        views: dict[str, PortfolioNames] = {}
        for r in rows:
            view = views.setdefault(r["portfolio"], PortfolioNames())
            if r["withdrawn"]:
                view.revisions[r["project_key"]] = r["revision"]
            else:
                view.add_name(r["project_key"], r["external_id"], r["name"], r["revision"])
        return views

    async def log(self, entries: Sequence[LogEntry]) -> None:
        """Add these entries to the submission log when the transaction commits."""
        if not entries:
            return
        self._defer(
            insert_statement(
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
        )


class ProjectStore(Protocol):
    """The port intake's handler needs for its state."""

    async def save(self, projects: Iterable[tuple[str, StoredProject]]) -> None: ...

    async def portfolio_views(self, portfolios: Iterable[str]) -> dict[str, PortfolioView]: ...

    async def portfolio_names(self, portfolios: Iterable[str]) -> dict[str, PortfolioNames]: ...

    async def log(self, entries: Sequence[LogEntry]) -> None: ...


class IntakeTransaction(UnitOfWork, Protocol):
    @property
    def projects(self) -> ProjectStore: ...

    async def open_batch(
        self, claims: Sequence[tuple[str, str | None]], keys: Collection[str]
    ) -> OpenedBatch: ...


class IntakeUnitOfWork(PostgresUnitOfWork):
    projects: ProjectRepository

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.projects = ProjectRepository(conn, self.defer)

    async def open_batch(
        self, claims: Sequence[tuple[str, str | None]], keys: Collection[str]
    ) -> OpenedBatch:
        """Start a batch in one statement: claim its inbox ids (``claims``: each id with its
        submission's portfolio, None for a record that could not be read), count a change of
        each portfolio with a fresh submission, and read the stored projects of ``keys``.

        The portfolios' rows stay locked until the transaction ends (taken in name order, so
        two batches cannot deadlock): batches of one portfolio count up one at a time."""
        portfolios = dict(claims)  # an id twice in a batch is the same submission
        rows = await self.conn.fetch(
            _OPEN_BATCH, list(portfolios), list(portfolios.values()), list(keys)
        )
        fresh: set[str] = set()
        stored: dict[str, StoredProject] = {}
        versions: dict[str, int] = {}
        for r in rows:
            if r["part"] == "claimed":
                fresh.add(r["key"])
            elif r["part"] == "counted":
                versions[r["key"]] = r["number"]
            else:
                stored[r["key"]] = StoredProject(
                    revision=r["number"],
                    withdrawn=r["withdrawn"],
                    state=ProjectState.model_validate_json(r["state"]) if r["state"] else None,
                    portfolio=r["portfolio"],
                    external_id=r["external_id"],
                )
        return OpenedBatch(fresh, stored, versions)


# A batch's start (``open_batch``), one row a part: the claimed ids, the counted portfolios,
# the stored projects (read through the primary key: migration 0005).
_OPEN_BATCH = (
    f"WITH claimed AS ({inbox.CLAIM.format(ids='$1::text[]')}),"
    " counted AS (INSERT INTO portfolio_versions (portfolio, version)"
    " SELECT DISTINCT c.portfolio, 1 FROM unnest($1::text[], $2::text[]) AS c (event_id, portfolio)"
    " JOIN claimed USING (event_id) WHERE c.portfolio IS NOT NULL ORDER BY c.portfolio"
    " ON CONFLICT (portfolio) DO UPDATE SET version = portfolio_versions.version + 1"
    " RETURNING portfolio, version)"
    " SELECT 'claimed' AS part, event_id AS key, NULL::bigint AS number, NULL::text AS portfolio,"
    " NULL::text AS external_id, NULL::boolean AS withdrawn, NULL::jsonb AS state FROM claimed"
    " UNION ALL SELECT 'counted', portfolio, version, NULL, NULL, NULL, NULL FROM counted"
    " UNION ALL SELECT 'stored', project_key, revision, portfolio, external_id, withdrawn, state"
    " FROM stored_projects($3::text[])"
)

_PROJECT_COLUMNS = (
    ("project_key", "text"),
    ("portfolio", "text"),
    ("revision", "bigint"),
    ("withdrawn", "boolean"),
    ("stage", "text"),
    ("name", "text"),
    ("state", "jsonb"),
    ("external_id", "text"),
)

# A batch's projects, inserted or overwritten; a project's dependencies are its state's (none
# for a withdrawn project's tombstone).
_SAVE = (
    "INSERT INTO projects (project_key, portfolio, revision, withdrawn, stage, name, state,"
    " external_id, depends_on)"
    " SELECT t.*, ARRAY(SELECT jsonb_array_elements_text(t.state -> 'depends_on'))"
    " FROM unnest({arrays}) AS t (project_key, portfolio, revision, withdrawn, stage, name, state,"
    " external_id)"
    " ON CONFLICT (project_key) DO UPDATE SET revision = excluded.revision,"
    " withdrawn = excluded.withdrawn, stage = excluded.stage, name = excluded.name,"
    " state = excluded.state, depends_on = excluded.depends_on, updated_at = now()"
)
