"""Scoring's SQL."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from asyncpg.pool import PoolConnectionProxy

from services.scoring.domain.inputs import ScoringInputs, Wsjf
from services.scoring.domain.ranking import Override
from services.scoring.domain.scoring import Part
from shared.contracts.events import Contribution
from shared.contracts.scoring import ModelEnvelope, ScoringAudit
from shared.uow import PostgresUnitOfWork


@dataclass(frozen=True, slots=True)
class PortfolioState:
    ranking_version: int
    model_version: int
    model: ModelEnvelope | None
    as_of_month: int | None


@dataclass(frozen=True, slots=True)
class RankingRow:
    key: str
    revision: int
    mandatory: bool
    ranked: bool
    score: float
    published_score: float | None
    published_rank: int | None
    published_override: str | None


def _inputs(r: Any) -> ScoringInputs:
    w = r["wsjf"]
    return ScoringInputs(
        key=r["project_key"],
        mandatory=r["mandatory"],
        ranked=r["ranked"],
        strategic_fit=json.loads(r["strategic_fit"]),
        value=r["value"],
        cost=r["cost"],
        risk=r["risk"],
        deadline=r["deadline"],
        wsjf=Wsjf(w[0], w[1], w[2], w[3]) if w else None,
        effort=r["effort"],
    )


_INPUT_COLUMNS = (
    "project_key, mandatory, ranked, strategic_fit, value, cost, risk, deadline, wsjf, effort"
)


class ScoringRepository:
    def __init__(self, conn: PoolConnectionProxy[Any]) -> None:
        self._conn = conn

    async def revisions(self, keys: Iterable[str]) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT project_key, revision FROM projects WHERE project_key = ANY($1::text[])",
            list(keys),
        )
        return {r["project_key"]: r["revision"] for r in rows}

    async def save_inputs(
        self, rows: Sequence[tuple[str, str, int, bool, str, ScoringInputs]]
    ) -> None:
        """(key, portfolio, revision, withdrawn, state JSON, inputs) of changed projects."""
        if not rows:
            return
        await self._conn.executemany(
            "INSERT INTO projects (project_key, portfolio, revision, withdrawn, mandatory, ranked,"
            " state, score, explanation, strategic_fit, value, cost, risk, deadline, wsjf, effort)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 0, '[]', $8::jsonb, $9, $10, $11, $12,"
            " $13, $14) ON CONFLICT (project_key) DO UPDATE SET revision = excluded.revision,"
            " withdrawn = excluded.withdrawn, mandatory = excluded.mandatory,"
            " ranked = excluded.ranked, state = excluded.state,"
            " strategic_fit = excluded.strategic_fit, value = excluded.value,"
            " cost = excluded.cost, risk = excluded.risk, deadline = excluded.deadline,"
            " wsjf = excluded.wsjf, effort = excluded.effort, updated_at = now()",
            [
                (
                    key,
                    portfolio,
                    revision,
                    withdrawn,
                    i.mandatory,
                    i.ranked,
                    state,
                    json.dumps(i.strategic_fit),
                    i.value,
                    i.cost,
                    i.risk,
                    i.deadline,
                    [
                        i.wsjf.business_value,
                        i.wsjf.time_criticality,
                        i.wsjf.risk_reduction,
                        i.wsjf.job_size,
                    ]
                    if i.wsjf
                    else None,
                    i.effort,
                )
                for key, portfolio, revision, withdrawn, state, i in rows
            ],
        )

    async def inputs(
        self, portfolio: str, keys: Iterable[str] | None = None
    ) -> list[ScoringInputs]:
        if keys is None:
            rows = await self._conn.fetch(
                f"SELECT {_INPUT_COLUMNS} FROM projects WHERE portfolio = $1", portfolio
            )
        else:
            rows = await self._conn.fetch(
                f"SELECT {_INPUT_COLUMNS} FROM projects WHERE project_key = ANY($1::text[])",
                list(keys),
            )
        return [_inputs(r) for r in rows]

    async def save_results(
        self,
        scores: dict[str, tuple[float, str]],
        published: Sequence[tuple[str, int | None, float, str | None]],
    ) -> None:
        """Write new (score, explanation JSON) by key, and record (key, rank, score, override
        JSON) as the ranking now published: one COPY into a staging table and one UPDATE,
        whatever the count, so a rescore rewrites each row once, not once per kind of change."""
        if not scores and not published:
            return
        await self._conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS result_stage (project_key text,"
            " score double precision, explanation text, published boolean, rank int,"
            " published_score double precision, published_override text) ON COMMIT DELETE ROWS"
        )
        ranks = {key: (rank, score, override) for key, rank, score, override in published}
        records: list[tuple[Any, ...]] = [
            (key, score, explanation, key in ranks, *ranks.get(key, (None, None, None)))
            for key, (score, explanation) in scores.items()
        ]
        records += [
            (key, None, None, True, rank, score, override)
            for key, (rank, score, override) in ranks.items()
            if key not in scores
        ]
        await self._conn.copy_records_to_table("result_stage", records=records)
        await self._conn.execute(
            "UPDATE projects p SET score = coalesce(s.score, p.score),"
            " explanation = coalesce(s.explanation::jsonb, p.explanation),"
            " rank = CASE WHEN s.published THEN s.rank ELSE p.rank END,"
            " published_rank = CASE WHEN s.published THEN s.rank ELSE p.published_rank END,"
            " published_score = CASE WHEN s.published THEN s.published_score"
            " ELSE p.published_score END,"
            " published_override = CASE WHEN s.published THEN s.published_override::jsonb"
            " ELSE p.published_override END"
            " FROM result_stage s WHERE p.project_key = s.project_key"
        )
        await self._conn.execute("TRUNCATE result_stage")

    async def ranking(self, portfolio: str) -> list[RankingRow]:
        rows = await self._conn.fetch(
            "SELECT project_key, revision, mandatory, ranked, score, published_score,"
            " published_rank, published_override::text AS published_override"
            " FROM projects WHERE portfolio = $1",
            portfolio,
        )
        return [
            RankingRow(
                key=r["project_key"],
                revision=r["revision"],
                mandatory=r["mandatory"],
                ranked=r["ranked"],
                score=r["score"],
                published_score=r["published_score"],
                published_rank=r["published_rank"],
                published_override=r["published_override"],
            )
            for r in rows
        ]

    async def explanations(self, keys: Iterable[str]) -> dict[str, list[Part]]:
        rows = await self._conn.fetch(
            "SELECT project_key, explanation FROM projects WHERE project_key = ANY($1::text[])",
            list(keys),
        )
        return {
            r["project_key"]: [
                cast(Part, Contribution.model_validate(c).model_dump())
                for c in json.loads(r["explanation"])
            ]
            for r in rows
        }

    async def portfolio(self, portfolio: str) -> PortfolioState:
        row = await self._conn.fetchrow(
            "SELECT p.ranking_version, p.model_version, p.as_of_month, m.name, m.spec"
            " FROM portfolios p LEFT JOIN models m ON m.portfolio = p.portfolio"
            " AND m.version = p.model_version WHERE p.portfolio = $1",
            portfolio,
        )
        if row is None:
            return PortfolioState(0, 0, None, None)
        model = (
            ModelEnvelope.model_validate({"name": row["name"], "model": json.loads(row["spec"])})
            if row["spec"]
            else None
        )
        return PortfolioState(
            row["ranking_version"], row["model_version"], model, row["as_of_month"]
        )

    async def save_portfolio(self, portfolio: str, state: PortfolioState) -> None:
        await self._conn.execute(
            "INSERT INTO portfolios (portfolio, ranking_version, model_version, as_of_month)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (portfolio) DO UPDATE SET"
            " ranking_version = excluded.ranking_version,"
            " model_version = excluded.model_version, as_of_month = excluded.as_of_month",
            portfolio,
            state.ranking_version,
            state.model_version,
            state.as_of_month,
        )

    async def add_model(
        self,
        portfolio: str,
        version: int,
        envelope: ModelEnvelope,
        *,
        author: str,
        comment: str,
        command_id: str,
        at: datetime,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO models (portfolio, version, name, spec, author, comment, command_id,"
            " set_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)",
            portfolio,
            version,
            envelope.name,
            envelope.model.model_dump_json(),
            author,
            comment,
            command_id,
            at,
        )

    async def overrides(self, portfolio: str) -> dict[str, Override]:
        rows = await self._conn.fetch(
            "SELECT project_key, kind, rank, delta, justification, author FROM overrides"
            " WHERE portfolio = $1",
            portfolio,
        )
        return {
            r["project_key"]: Override(
                kind=r["kind"],
                justification=r["justification"],
                author=r["author"],
                rank=r["rank"],
                delta=r["delta"],
            )
            for r in rows
        }

    async def set_override(
        self, portfolio: str, key: str, override: Override | None, at: datetime
    ) -> None:
        if override is None:
            await self._conn.execute("DELETE FROM overrides WHERE project_key = $1", key)
            return
        await self._conn.execute(
            "INSERT INTO overrides (project_key, portfolio, kind, rank, delta, justification,"
            " author, set_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (project_key)"
            " DO UPDATE SET kind = excluded.kind, rank = excluded.rank, delta = excluded.delta,"
            " justification = excluded.justification, author = excluded.author,"
            " set_at = excluded.set_at",
            key,
            portfolio,
            override.kind,
            override.rank,
            override.delta,
            override.justification,
            override.author,
            at,
        )

    async def exists(self, key: str) -> bool:
        return bool(await self._conn.fetchval("SELECT 1 FROM projects WHERE project_key = $1", key))

    async def audit(self, entry: ScoringAudit) -> None:
        await self._conn.execute(
            "INSERT INTO audit (portfolio, command_id, action, author, outcome, detail, comment,"
            " at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
            entry.portfolio,
            entry.command_id,
            entry.action,
            entry.author,
            entry.outcome,
            json.dumps(entry.detail),
            entry.comment,
            entry.at,
        )


class ScoringUnitOfWork(PostgresUnitOfWork):
    projects: ScoringRepository

    def _bind(self, conn: PoolConnectionProxy[Any]) -> None:
        self.projects = ScoringRepository(conn)
