"""Capacity's SQL."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.capacity.domain.planner import Resource
from shared.contracts.common import month_index
from shared.contracts.events import (
    Deferral,
    ProjectChanged,
    ProjectScored,
    ProjectState,
    RankChange,
)
from shared.contracts.inbound import ResourceUpdate
from shared.db import upsert_rows
from shared.uow import PostgresUnitOfWork


@dataclass(frozen=True, slots=True)
class StoredPlacement:
    status: str
    start_month: str | None
    end_month: str | None
    deferral: Deferral | None


@dataclass(frozen=True, slots=True)
class PortfolioInputs:
    # key, withdrawn, state, rank, score
    projects: list[tuple[str, bool, ProjectState, int | None, float | None]]
    resources: list[Resource]
    placements: dict[str, StoredPlacement]


class ProjectStates:
    """The project states a replica has parsed, by portfolio and project, with the revision
    each was read at. A replan reads a whole portfolio; a project whose revision is the one
    held here comes back without its state, which is then neither sent nor parsed again (the
    parse was a tenth of capacity's CPU under load). A revision names one state: intake
    refuses a revision that is not newer than the stored one, and a withdrawal is a new
    revision (docs/contract.md). The ``portfolios`` most recently read are held (as intake
    holds its portfolio views); an empty portfolio is not."""

    def __init__(self, portfolios: int = 64) -> None:
        self._held: OrderedDict[str, Mapping[str, tuple[int, ProjectState]]] = OrderedDict()
        self._portfolios = portfolios

    def held(self, portfolio: str) -> Mapping[str, tuple[int, ProjectState]]:
        return self._held.get(portfolio, {})

    def keep(self, portfolio: str, states: Mapping[str, tuple[int, ProjectState]]) -> None:
        """Hold ``states`` as the portfolio's (the projects no longer in it are let go)."""
        self._held.pop(portfolio, None)
        if states:
            self._held[portfolio] = states
            while len(self._held) > self._portfolios:
                self._held.popitem(last=False)


class CapacityRepository:
    def __init__(self, conn: PoolConnectionProxy[Any], states: ProjectStates | None = None) -> None:
        self._conn = conn
        self._states = states if states is not None else ProjectStates()

    async def _versions(self, sql: str, keys: Iterable[Any]) -> dict[Any, int]:
        return {r[0]: r[1] for r in await self._conn.fetch(sql, list(keys))}

    async def project_revisions(self, keys: Iterable[str]) -> dict[str, int]:
        return await self._versions(
            "SELECT project_key, revision FROM projects WHERE project_key = ANY($1::text[])", keys
        )

    async def ranking_versions(self, keys: Iterable[str]) -> dict[str, int]:
        return await self._versions(
            "SELECT project_key, ranking_version FROM ranks WHERE project_key = ANY($1::text[])",
            keys,
        )

    async def resource_revisions(self, keys: Iterable[str]) -> dict[str, int]:
        return await self._versions(
            "SELECT portfolio || '/' || resource_id, revision FROM resources"
            " WHERE portfolio || '/' || resource_id = ANY($1::text[])",
            keys,
        )

    async def save_projects(self, events: Sequence[ProjectChanged]) -> None:
        await upsert_rows(
            self._conn,
            "projects",
            (
                ("project_key", "text"),
                ("portfolio", "text"),
                ("revision", "bigint"),
                ("withdrawn", "boolean"),
                ("state", "jsonb"),
            ),
            [
                (e.project_key, e.portfolio, e.revision, e.withdrawn, e.project.model_dump_json())
                for e in events
            ],
            key=("project_key",),
        )

    async def save_ranks(self, events: Sequence[ProjectScored]) -> None:
        await upsert_rows(
            self._conn,
            "ranks",
            (
                ("project_key", "text"),
                ("portfolio", "text"),
                ("ranking_version", "bigint"),
                ("rank", "int"),
                ("score", "double precision"),
            ),
            [(e.project_key, e.portfolio, e.ranking_version, e.rank, e.score) for e in events],
            key=("project_key",),
        )

    async def move_ranks(self, moves: Sequence[tuple[int, RankChange]]) -> None:
        """Ranks that moved, each ``(ranking_version, move)``; a rank of a newer version (from
        a ``ProjectScored`` of this batch or before) is kept."""
        if not moves:
            return
        await self._conn.execute(
            "UPDATE ranks r SET rank = m.rank, ranking_version = m.version"
            " FROM unnest($1::text[], $2::int[], $3::bigint[]) AS m(project_key, rank, version)"
            " WHERE r.project_key = m.project_key AND r.ranking_version < m.version",
            [m.project_key for _, m in moves],
            [m.rank for _, m in moves],
            [v for v, _ in moves],
        )

    async def save_resources(self, updates: Sequence[ResourceUpdate]) -> None:
        await self._conn.executemany(
            "INSERT INTO resources (portfolio, resource_id, revision, withdrawn, name, role, fte,"
            " from_month, until_month, exceptions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            " $10::jsonb) ON CONFLICT (portfolio, resource_id) DO UPDATE SET"
            " revision = excluded.revision, withdrawn = excluded.withdrawn, name = excluded.name,"
            " role = excluded.role, fte = excluded.fte, from_month = excluded.from_month,"
            " until_month = excluded.until_month, exceptions = excluded.exceptions",
            [
                (
                    u.portfolio,
                    u.resource_id,
                    u.revision,
                    u.action == "withdraw",
                    u.name,
                    u.role,
                    u.fte,
                    u.from_,
                    u.until,
                    json.dumps([e.model_dump() for e in u.exceptions]),
                )
                for u in updates
            ],
        )

    async def inputs(self, portfolio: str) -> PortfolioInputs:
        held = self._states.held(portfolio)
        projects = await self._conn.fetch(
            "SELECT p.project_key, p.withdrawn, p.revision, r.rank, r.score,"
            " CASE WHEN h.revision = p.revision THEN NULL ELSE p.state END AS state"
            " FROM projects p LEFT JOIN ranks r USING (project_key)"
            " LEFT JOIN unnest($2::text[], $3::bigint[]) AS h(project_key, revision)"
            " USING (project_key) WHERE p.portfolio = $1",
            portfolio,
            list(held),
            [revision for revision, _ in held.values()],
        )
        states: dict[str, tuple[int, ProjectState]] = {}
        for r in projects:
            text = r["state"]
            states[r["project_key"]] = (
                (r["revision"], ProjectState.model_validate_json(text))
                if text is not None
                else held[r["project_key"]]
            )
        self._states.keep(portfolio, states)
        resources = await self._conn.fetch(
            "SELECT resource_id, role, fte, from_month, until_month, exceptions FROM resources"
            " WHERE portfolio = $1 AND NOT withdrawn",
            portfolio,
        )
        placements = await self._conn.fetch(
            "SELECT project_key, status, start_month, end_month, deferral FROM placements"
            " WHERE portfolio = $1",
            portfolio,
        )
        return PortfolioInputs(
            projects=[
                (
                    r["project_key"],
                    r["withdrawn"],
                    states[r["project_key"]][1],
                    r["rank"],
                    r["score"],
                )
                for r in projects
            ],
            resources=[
                Resource(
                    resource_id=r["resource_id"],
                    role=r["role"],
                    fte=r["fte"],
                    start=month_index(r["from_month"]),
                    end=month_index(r["until_month"]) if r["until_month"] else None,
                    exceptions={
                        month_index(e["month"]): e["fte"] for e in json.loads(r["exceptions"])
                    },
                )
                for r in resources
            ],
            placements={
                r["project_key"]: StoredPlacement(
                    r["status"],
                    r["start_month"],
                    r["end_month"],
                    Deferral.model_validate_json(r["deferral"]) if r["deferral"] else None,
                )
                for r in placements
            },
        )

    async def save_placements(
        self, portfolio: str, placements: Sequence[tuple[str, StoredPlacement]]
    ) -> None:
        await upsert_rows(
            self._conn,
            "placements",
            (
                ("project_key", "text"),
                ("portfolio", "text"),
                ("status", "text"),
                ("start_month", "text"),
                ("end_month", "text"),
                ("deferral", "jsonb"),
            ),
            [
                (
                    key,
                    portfolio,
                    p.status,
                    p.start_month,
                    p.end_month,
                    p.deferral.model_dump_json() if p.deferral else None,
                )
                for key, p in placements
            ],
            key=("project_key",),
        )

    async def plan_state(self, portfolio: str) -> tuple[int, str | None]:
        """``portfolio``'s last plan version and its summary's hash (0 and None before any).
        Read without a row lock: only the replanner holding the portfolio's lock changes them,
        in ``finish_replan``."""
        row = await self._conn.fetchrow(
            "SELECT plan_version, summary_hash FROM portfolios WHERE portfolio = $1", portfolio
        )
        return (row["plan_version"], row["summary_hash"]) if row else (0, None)

    async def request_replan(self, portfolios: Sequence[str]) -> None:
        """Mark ``portfolios`` as due for a replan: the earliest request time is kept (what the
        wait metric measures), and every request counts, so a replan that began before it
        does not clear it."""
        if portfolios:
            await self._conn.execute(
                "INSERT INTO portfolios (portfolio, replan_requested_at, replan_requests)"
                " SELECT p, now(), 1 FROM unnest($1::text[]) AS p"
                " ON CONFLICT (portfolio) DO UPDATE SET replan_requested_at ="
                " coalesce(portfolios.replan_requested_at, excluded.replan_requested_at),"
                " replan_requests = portfolios.replan_requests + 1",
                list(portfolios),
            )

    async def due_replans(self, limit: int, spacing: timedelta) -> tuple[list[str], float | None]:
        """Portfolios waiting for a replan whose last one is at least ``spacing`` ago, the
        longest-waiting first; and the seconds until the next one that is waiting only for its
        spacing (None if none is)."""
        rows = await self._conn.fetch(
            "SELECT portfolio, extract(epoch FROM greatest(replan_requested_at,"
            " replanned_at + $2::interval) - clock_timestamp())::float8 AS wait"
            " FROM portfolios WHERE replan_requested_at IS NOT NULL"
            " ORDER BY greatest(replan_requested_at, replanned_at + $2::interval) LIMIT $1",
            limit,
            spacing,
        )
        due = [r["portfolio"] for r in rows if r["wait"] <= 0]
        waits = [r["wait"] for r in rows if r["wait"] > 0]
        return due, min(waits) if waits else None

    async def replan_request(self, portfolio: str) -> int | None:
        """The count of ``portfolio``'s replan requests so far, if one is due (read without a
        lock: batches go on requesting while the replan runs)."""
        count: int | None = await self._conn.fetchval(
            "SELECT replan_requests FROM portfolios"
            " WHERE portfolio = $1 AND replan_requested_at IS NOT NULL",
            portfolio,
        )
        return count

    async def finish_replan(
        self,
        portfolio: str,
        requests: int,
        *,
        plan_version: int | None = None,
        summary_hash: str | None = None,
    ) -> float | None:
        """Record a replan: its plan version and summary hash when it published a plan, and
        clear ``portfolio``'s replan request if no request came after the ``requests``th (read
        before the replan read its inputs). Returns how long the request waited in seconds, or
        None when a later request keeps it due.

        The replan's only write to the portfolio's row, and its last statement: batches asking
        for replans update the same row, and wait for its lock only from here to the commit
        (taking the version at the start held it through the placements and the outbox)."""
        waited: float | None = await self._conn.fetchval(
            "UPDATE portfolios SET replanned_at = clock_timestamp(), replan_requested_at ="
            " CASE WHEN replan_requests = $2 THEN NULL ELSE replan_requested_at END,"
            " plan_version = coalesce($3, plan_version),"
            " summary_hash = coalesce($4, summary_hash)"
            " FROM (SELECT replan_requested_at AS at FROM portfolios WHERE portfolio = $1) AS due"
            " WHERE portfolio = $1"
            " RETURNING CASE WHEN replan_requests = $2 AND due.at IS NOT NULL"
            " THEN extract(epoch FROM clock_timestamp() - due.at)::float8 END",
            portfolio,
            requests,
            plan_version,
            summary_hash,
        )
        return waited


class CapacityUnitOfWork(PostgresUnitOfWork):
    """Capacity's unit of work; ``states``, shared by a replica's units of work, spares its
    replans reading and parsing the project states they have read before."""

    plans: CapacityRepository

    def __init__(self, pool: asyncpg.Pool[Any], states: ProjectStates | None = None) -> None:
        super().__init__(pool)
        self._states = states

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.plans = CapacityRepository(conn, self._states)
