"""Scoring's SQL."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncpg.pool import PoolConnectionProxy

from shared.contracts.events import Contribution
from shared.uow import PostgresUnitOfWork


@dataclass(frozen=True, slots=True)
class ProjectRow:
    key: str
    portfolio: str
    revision: int
    withdrawn: bool
    mandatory: bool
    ranked: bool
    state_json: str
    score: float
    explanation: list[Contribution]


@dataclass(frozen=True, slots=True)
class RankingRow:
    key: str
    revision: int
    mandatory: bool
    ranked: bool
    score: float
    rank: int | None
    published_score: float | None
    published_rank: int | None


class ScoringRepository:
    def __init__(self, conn: PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def revisions(self, keys: Iterable[str]) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT project_key, revision FROM projects WHERE project_key = ANY($1::text[])",
            list(keys),
        )
        return {r["project_key"]: r["revision"] for r in rows}

    async def upsert(self, rows: Sequence[ProjectRow]) -> None:
        if not rows:
            return
        await self._conn.executemany(
            "INSERT INTO projects (project_key, portfolio, revision, withdrawn, mandatory, ranked,"
            " state, score, explanation) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9::jsonb)"
            " ON CONFLICT (project_key) DO UPDATE SET revision = excluded.revision,"
            " withdrawn = excluded.withdrawn, mandatory = excluded.mandatory,"
            " ranked = excluded.ranked, state = excluded.state, score = excluded.score,"
            " explanation = excluded.explanation, updated_at = now()",
            [
                (
                    r.key,
                    r.portfolio,
                    r.revision,
                    r.withdrawn,
                    r.mandatory,
                    r.ranked,
                    r.state_json,
                    r.score,
                    json.dumps([c.model_dump() for c in r.explanation]),
                )
                for r in rows
            ],
        )

    async def ranking(self, portfolio: str) -> list[RankingRow]:
        rows = await self._conn.fetch(
            "SELECT project_key, revision, mandatory, ranked, score, rank, published_score,"
            " published_rank FROM projects WHERE portfolio = $1",
            portfolio,
        )
        return [
            RankingRow(
                key=r["project_key"],
                revision=r["revision"],
                mandatory=r["mandatory"],
                ranked=r["ranked"],
                score=r["score"],
                rank=r["rank"],
                published_score=r["published_score"],
                published_rank=r["published_rank"],
            )
            for r in rows
        ]

    async def explanations(self, keys: Iterable[str]) -> dict[str, list[Contribution]]:
        rows = await self._conn.fetch(
            "SELECT project_key, explanation FROM projects WHERE project_key = ANY($1::text[])",
            list(keys),
        )
        return {
            r["project_key"]: [Contribution.model_validate(c) for c in json.loads(r["explanation"])]
            for r in rows
        }

    async def publish_ranks(self, rows: Iterable[tuple[str, int | None, float]]) -> None:
        """Record (key, rank, score) as the ranking now published."""
        await self._conn.executemany(
            "UPDATE projects SET rank = $2, published_rank = $2, published_score = $3"
            " WHERE project_key = $1",
            list(rows),
        )

    async def next_ranking_version(self, portfolio: str) -> int:
        version: int = await self._conn.fetchval(
            "INSERT INTO portfolios (portfolio, ranking_version) VALUES ($1, 1)"
            " ON CONFLICT (portfolio) DO UPDATE SET ranking_version ="
            " portfolios.ranking_version + 1 RETURNING ranking_version",
            portfolio,
        )
        return version


class ScoringUnitOfWork(PostgresUnitOfWork):
    projects: ScoringRepository

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.projects = ScoringRepository(conn)
